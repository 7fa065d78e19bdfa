package clustertest

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill the server if the test process dies
// before its cleanups run (a panic or a -timeout), so no server outlives it.
// (Linux sends the signal when the thread that started the child exits;
// Go keeps its threads for the life of the process unless a goroutine
// exits while locked to one, which nothing here does.)
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
