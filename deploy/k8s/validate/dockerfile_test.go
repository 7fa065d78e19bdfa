package validate

import (
	"bufio"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(text string) ([]instruction, error) {
	var (
		out  []instruction
		cur  strings.Builder
		from int
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			from = n
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		fields := strings.SplitN(cur.String(), " ", 2)
		ins := instruction{line: from, cmd: strings.ToUpper(fields[0])}
		if len(fields) == 2 {
			ins.args = strings.TrimSpace(fields[1])
		}
		out = append(out, ins)
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: unterminated continuation", from)
	}
	return out, sc.Err()
}

type stage struct {
	image, name string
	ins         []instruction
}

var golangImage = regexp.MustCompile(`^golang:(\d+)\.(\d+)\.(\d+)(-[a-z0-9]+)?(@sha256:[0-9a-f]{64})?$`)

func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	ins, err := parseDockerfile(string(readFile(t, filepath.Join(root, "Dockerfile"))))
	if err != nil {
		t.Fatal(err)
	}
	var stages []*stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			var words []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			s := &stage{image: words[0]}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				s.name = words[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	if len(stages) < 2 {
		t.Fatalf("%d stage(s): want a multi-stage build (build, then a minimal runtime)", len(stages))
	}

	// Base images: pinned, never latest, no variables.
	var names []string
	for _, s := range stages {
		if slices.Contains(names, s.image) {
			continue // FROM an earlier stage
		}
		if s.name != "" {
			names = append(names, s.name)
		}
		repo, tag, digest := splitImage(s.image)
		switch {
		case strings.Contains(s.image, "$"):
			t.Errorf("FROM %s: a variable base image cannot be checked; pin it literally", s.image)
		case tag == "" && digest == "":
			t.Errorf("FROM %s: no tag (that is :latest)", s.image)
		case tag == "latest":
			t.Errorf("FROM %s: latest", s.image)
		case repo == "golang" && !golangImage.MatchString(s.image):
			t.Errorf("FROM %s: pin Go's patch version (golang:1.26.8-bookworm)", s.image)
		}
	}

	// The build stage: Go as in go.mod, static, reproducible paths.
	build := stages[0]
	m := golangImage.FindStringSubmatch(build.image)
	if m == nil {
		t.Fatalf("the first stage builds from %s, not golang:<x.y.z>", build.image)
	}
	goMod := string(readFile(t, filepath.Join(root, "go.mod")))
	gm := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?$`).FindStringSubmatch(goMod)
	if gm == nil {
		t.Fatal("go.mod has no go directive")
	}
	if m[1] != gm[1] || m[2] != gm[2] || atoi(m[3]) < atoi(gm[3]) {
		t.Errorf("build image %s is older than go.mod's go %s.%s.%s (or another minor)", build.image, gm[1], gm[2], gm[3])
	}
	var buildRun strings.Builder
	for _, in := range build.ins {
		if in.cmd == "RUN" || in.cmd == "ENV" {
			buildRun.WriteString(in.args + "\n")
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "go build", "./cmd/..."} {
		if !strings.Contains(buildRun.String(), want) {
			t.Errorf("build stage: no %q", want)
		}
	}

	// The runtime stage: distroless static as nonroot, the binaries in
	// /usr/local/bin, no shell to RUN anything with.
	final := stages[len(stages)-1]
	repo, tag, _ := splitImage(final.image)
	if !strings.HasPrefix(repo, "gcr.io/distroless/static") || !strings.Contains(tag, "nonroot") {
		t.Errorf("final image %s: want gcr.io/distroless/static-debian12:nonroot", final.image)
	}
	user := ""
	copied := false
	for _, in := range final.ins {
		switch in.cmd {
		case "USER":
			user = in.args
		case "RUN":
			t.Errorf("line %d: RUN in the final stage (distroless has no shell)", in.line)
		case "ADD":
			t.Errorf("line %d: ADD in the final stage: use COPY --from", in.line)
		case "COPY":
			if strings.Contains(in.args, "--from=") && strings.HasSuffix(strings.TrimSpace(in.args), "/usr/local/bin/") {
				copied = true
			}
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); uid != "65532" && uid != "nonroot" {
		t.Errorf("final stage USER %q: want 65532 (nonroot)", user)
	}
	if !copied {
		t.Error("final stage: the binaries are not copied to /usr/local/bin/")
	}
	for _, in := range ins {
		if in.cmd == "ADD" && regexp.MustCompile(`https?://`).MatchString(in.args) {
			t.Errorf("line %d: ADD from a URL (unpinned content)", in.line)
		}
	}

	// The build context leaves out what the build does not need.
	ignore := strings.Split(string(readFile(t, filepath.Join(root, ".dockerignore"))), "\n")
	for _, want := range []string{".git", "*.test", "deploy/"} {
		if !slices.Contains(ignore, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// deploy/README.md names every Secret and key an operator must create:
// the same contract the manifests are checked against.
func TestReadmeDocumentsSecrets(t *testing.T) {
	t.Parallel()
	readme := string(readFile(t, filepath.Join(deployDir(t), "README.md")))
	for _, name := range sortedKeys(secretContract) {
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("deploy/README.md does not name Secret `%s`", name)
		}
		keys := append(slices.Clone(secretContract[name]), optionalSecretKeys[name]...)
		for _, k := range keys {
			if !strings.Contains(readme, "`"+k+"`") {
				t.Errorf("deploy/README.md does not name key `%s` of Secret %s", k, name)
			}
		}
	}
}
