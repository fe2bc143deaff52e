package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// stage is one stage of deploy/Dockerfile.
type stage struct {
	name, image string
	user        string
	expose      []string
	run         []string // RUN instructions, continuation lines joined
}

// dockerfileStages parses the instructions of deploy/Dockerfile the tests
// look at.
func dockerfileStages(t *testing.T) []stage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var instrs []string
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		instrs = append(instrs, cur.String())
		cur.Reset()
	}
	for _, in := range instrs {
		f := strings.Fields(in)
		switch strings.ToUpper(f[0]) {
		case "FROM":
			args := f[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				args = args[1:]
			}
			st := stage{image: args[0]}
			if len(args) == 3 && strings.EqualFold(args[1], "AS") {
				st.name = args[2]
			}
			stages = append(stages, st)
		case "USER":
			if len(stages) > 0 {
				stages[len(stages)-1].user = f[1]
			}
		case "EXPOSE":
			if len(stages) > 0 {
				stages[len(stages)-1].expose = append(stages[len(stages)-1].expose, f[1:]...)
			}
		case "RUN":
			if len(stages) > 0 {
				stages[len(stages)-1].run = append(stages[len(stages)-1].run, in)
			}
		}
	}
	if len(stages) < 2 {
		t.Fatalf("deploy/Dockerfile: %d stages, want a build stage and a final one", len(stages))
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := dockerfileStages(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)

	// The build image's Go is the one go.mod asks for.
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "ARG GO_VERSION=" + string(m[1]) + "\n"; !strings.Contains(df, want) {
		t.Errorf("deploy/Dockerfile lacks %q (go.mod says go %s)", strings.TrimSpace(want), m[1])
	}
	build := stages[0]
	if !strings.HasPrefix(build.image, "golang:") {
		t.Errorf("deploy/Dockerfile: the first stage builds from %s, want golang", build.image)
	}
	var goBuild string
	for _, r := range build.run {
		if strings.Contains(r, "go build") {
			goBuild = r
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "./cmd/parley"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("deploy/Dockerfile: the go build lacks %s: %q", want, goBuild)
		}
	}
	for _, st := range stages[1:] {
		if st.user == "" || st.user == "root" || strings.HasPrefix(st.user, "0") {
			t.Errorf("deploy/Dockerfile: stage %s runs as root", st.name)
		}
		if len(st.expose) != 1 || st.expose[0] != "8080" {
			t.Errorf("deploy/Dockerfile: stage %s exposes %v, want 8080", st.name, st.expose)
		}
	}
	// docker compose builds the last stage, and its healthcheck runs wget
	// in it: that stage must be one with wget.
	last := stages[len(stages)-1]
	p := loadCompose(t)
	hc := service(t, p, "gateway").HealthCheck
	if hc != nil && len(hc.Test) > 1 && hc.Test[1] == "wget" && !strings.HasPrefix(last.image, "alpine") {
		t.Errorf("deploy/Dockerfile: the default stage is %s, but the compose healthcheck needs BusyBox wget (alpine)", last.image)
	}
}
