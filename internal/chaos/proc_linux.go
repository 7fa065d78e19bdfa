package chaos

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a child (the private redis-server) if
// the run's process dies before its cleanups run: a panic or a test
// -timeout leaves no server behind.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
