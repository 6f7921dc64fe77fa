// Command checkdeps fails when the tests or scripts rely on something that
// the setup scripts do not install.
//
// It lists what the repository calls or reads from the system — commands run
// by Go code (exec.Command, exec.LookPath) and by the shell scripts, C headers
// and pkg-config modules of the cgo code, .proto imports, Python modules
// imported by the Python kit, and absolute paths of data files (models,
// cascades, media) — finds the Debian package that
// provides each (dpkg -S), and checks that the package is in the closure of
// the lists the setup installs (scripts/lib.sh: PRODUCT_APT, TEST_APT and the
// Node.js packages), or is part of every Debian system (Essential or
// Priority required/important). Commands installed with `go install` must be
// named by need_go_tool in the setup scripts.
//
// Usage: go run ./scripts/checkdeps [-without pkg,...] [-v]
//
// -without drops packages from the setup lists, to show that the check
// notices when one goes missing.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// need is one thing the repository relies on, with where it was seen.
type need struct {
	kind, name, where string
}

// nonDebian are commands that come from outside Debian's packages, with the
// reason; the README names them as prerequisites.
var nonDebian = map[string]string{
	"go":   "Go 1.26 from go.dev is a README prerequisite (Debian 12's Go is too old)",
	"sudo": "used only when the scripts are not run as root",
	// Not in Debian 12's archive; TestKustomizeBuild skips without it and
	// k3s_test.go checks the manifests with our own loader.
	"kubectl": "optional: only TestKustomizeBuild uses it and skips without it",
}

// shellWords are shell keywords and builtins that are not commands to install.
var shellWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`if then else elif fi for while until do done case esac in function
		return local export set source exit echo printf read cd pwd trap wait exec shift true false test
		command type declare readonly unset eval break continue let printf mapfile kill [ [[ ] ]] { } ! time`) {
		shellWords[w] = true
	}
}

func main() {
	without := flag.String("without", "", "comma-separated packages to drop from the setup lists (to test the check)")
	verbose := flag.Bool("v", false, "print every need and its package")
	flag.Parse()

	root, err := repoRoot()
	if err != nil {
		fatal(err)
	}
	results, err := run(root, strings.Split(*without, ","))
	if err != nil {
		fatal(err)
	}
	var problems []string
	for _, r := range results {
		if r.problem != "" {
			problems = append(problems, r.problem)
		} else if *verbose {
			fmt.Printf("ok  %-7s %-60s %s\n", r.kind, r.name, r.pkg)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "checkdeps:", p)
		}
		fmt.Fprintf(os.Stderr, "checkdeps: %d of %d needs are not installed by the setup scripts\n", len(problems), len(results))
		os.Exit(1)
	}
	fmt.Printf("checkdeps: all %d commands, headers, .proto imports, Python modules and data files come from packages the setup installs\n", len(results))
}

// result is a need with the package that provides it, or what is wrong.
type result struct {
	need
	pkg, problem string
}

// checker holds what is slow to find out (the needs, their files and
// owners), so several variants of the setup lists can be checked cheaply.
type checker struct {
	lists   map[string]bool
	located []located
}

func newChecker(root string) (*checker, error) {
	lists, goTools, err := setupLists(root)
	if err != nil {
		return nil, err
	}
	var needs []need
	for _, scan := range []func(string) ([]need, error){scanGo, scanShell, scanProto, scanPython} {
		n, err := scan(root)
		if err != nil {
			return nil, err
		}
		needs = append(needs, n...)
	}
	return &checker{lists: lists, located: locate(dedupe(needs), goTools)}, nil
}

// check judges every need against the setup lists less the packages in
// without.
func (c *checker) check(without []string) ([]result, error) {
	lists := map[string]bool{}
	for p := range c.lists {
		lists[p] = true
	}
	for _, p := range without {
		delete(lists, strings.TrimSpace(p))
	}
	closure, err := dependencyClosure(lists)
	if err != nil {
		return nil, err
	}
	var out []result
	for _, l := range c.located {
		pkg, problem := verdict(l, closure)
		out = append(out, result{l.need, pkg, problem})
	}
	return out, nil
}

// run checks the repository at root against the setup lists less without.
func run(root string, without []string) ([]result, error) {
	c, err := newChecker(root)
	if err != nil {
		return nil, err
	}
	return c.check(without)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "checkdeps:", err)
	os.Exit(2)
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run inside the repository")
	}
	return filepath.Dir(mod), nil
}

// setupLists reads the package lists and go-installed tools from the setup
// scripts by asking bash, so the lists are read exactly as the scripts use them.
func setupLists(root string) (map[string]bool, map[string]bool, error) {
	script := `source scripts/lib.sh >/dev/null; echo "${PRODUCT_APT[@]} ${TEST_APT[@]} ${NODE_APT[@]}"; echo "$MODELS_DIR"; echo "${INSTALLED_MODELS[@]}"`
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("reading scripts/lib.sh: %w", err)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) < 3 || strings.TrimSpace(lines[1]) == "" {
		return nil, nil, fmt.Errorf("reading scripts/lib.sh: no MODELS_DIR")
	}
	lists := map[string]bool{}
	for _, p := range strings.Fields(lines[0]) {
		lists[p] = true
	}
	modelsDir = filepath.Clean(strings.TrimSpace(lines[1]))
	installedModels = map[string]bool{}
	for _, p := range strings.Fields(lines[2]) {
		installedModels[filepath.Clean(p)] = true
	}
	goTools := map[string]bool{}
	re := regexp.MustCompile(`need_go_tool\s+(\S+)\s`)
	for _, f := range []string{"scripts/lib.sh", "scripts/setup-product.sh", "scripts/setup-test.sh"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, nil, err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			goTools[m[1]] = true
		}
	}
	return lists, goTools, nil
}

// dependencyClosure is the set of installed packages the lists pull in
// (Depends and Pre-Depends, recursively, every installed alternative),
// read from dpkg's status file.
func dependencyClosure(lists map[string]bool) (map[string]bool, error) {
	if installed == nil {
		if err := readDpkgStatus("/var/lib/dpkg/status"); err != nil {
			return nil, err
		}
	}
	closure := map[string]bool{}
	var queue []string
	add := func(name string) {
		for _, p := range append([]string{name}, provides[name]...) {
			if _, ok := installed[p]; ok && !closure[p] {
				closure[p] = true
				queue = append(queue, p)
			}
		}
	}
	for p := range lists {
		add(p)
		closure[p] = true // listed, even where not installed yet
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, dep := range installed[p] {
			add(dep)
		}
	}
	return closure, nil
}

var (
	installed map[string][]string // installed package → the names it depends on
	provides  map[string][]string // virtual package → installed packages providing it
)

func readDpkgStatus(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	installed, provides = map[string][]string{}, map[string][]string{}
	names := func(field string) []string {
		var out []string
		for _, alt := range regexp.MustCompile(`[,|]`).Split(field, -1) {
			if f := strings.Fields(alt); len(f) > 0 {
				out = append(out, strings.SplitN(f[0], ":", 2)[0])
			}
		}
		return out
	}
	for _, stanza := range strings.Split(string(b), "\n\n") {
		fields := map[string]string{}
		key := ""
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, " ") && key != "" {
				fields[key] += " " + strings.TrimSpace(line)
				continue
			}
			if i := strings.Index(line, ":"); i > 0 {
				key = line[:i]
				fields[key] = strings.TrimSpace(line[i+1:])
			}
		}
		if !strings.HasSuffix(fields["Status"], " installed") || fields["Package"] == "" {
			continue
		}
		pkg := fields["Package"]
		installed[pkg] = append(installed[pkg], names(fields["Depends"]+","+fields["Pre-Depends"])...)
		for _, v := range names(fields["Provides"]) {
			provides[v] = append(provides[v], pkg)
		}
	}
	return nil
}

// The directory the setup installs models into from npm (need_models in
// scripts/lib.sh) and the files it installs there, read from scripts/lib.sh.
var (
	modelsDir       string
	installedModels map[string]bool
)

var (
	absPath = regexp.MustCompile(`^/usr/(local/share|share|include|lib)/[^\s"']+$`)
	// A data file's name, maybe below one directory (a model in the models
	// directory: blazeface/model.onnx).
	dataFile  = regexp.MustCompile(`^([\w.-]+/)?[\w.-]+\.(jpg|jpeg|png|bmp|avi|mp4|xml|txt|onnx|pb|caffemodel|prototxt|yml|yaml)$`)
	arith     = regexp.MustCompile(`\$?\(\([^)]*\)\)`)
	testExpr  = regexp.MustCompile(`\[\[? [^]]*\]\]?`)
	includeRe = regexp.MustCompile(`^\s*#\s*include\s*<([^>]+)>`)
	pkgConfRe = regexp.MustCompile(`#cgo\s+(?:[!\w,]+\s+)?pkg-config:\s*(.+)`)
)

// scanGo finds commands run by Go code, absolute data paths in string
// literals, and the headers and pkg-config modules of cgo code.
func scanGo(root string) ([]need, error) {
	var needs []need
	var dataDirs []string
	var fileNames []need
	fset := token.NewFileSet()
	err := walk(root, func(path string) error {
		rel, _ := filepath.Rel(root, path)
		switch filepath.Ext(path) {
		case ".c", ".h", ".cpp", ".cc", ".hpp":
			return scanIncludes(path, rel, &needs)
		case ".go":
		default:
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, cg := range f.Comments {
			for _, line := range strings.Split(cg.Text(), "\n") {
				if m := includeRe.FindStringSubmatch(line); m != nil {
					needs = append(needs, need{"header", m[1], rel})
				}
				if m := pkgConfRe.FindStringSubmatch("#" + strings.TrimPrefix(strings.TrimSpace(line), "#")); m != nil {
					for _, mod := range strings.Fields(m[1]) {
						needs = append(needs, need{"pkgconf", mod, rel})
					}
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				if name := execCallee(x); name != "" {
					// The program is the first argument that is not a
					// context or testing.T: a string literal, or a name we
					// cannot follow.
					for i, a := range x.Args {
						if (name == "CommandContext" || name == "NeedCommand") && i == 0 {
							continue
						}
						if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							if s, err := strconv.Unquote(lit.Value); err == nil && s != "" {
								needs = append(needs, need{"command", s, fmt.Sprintf("%s:%d", rel, fset.Position(lit.Pos()).Line)})
							}
						}
						break
					}
				}
			case *ast.BasicLit:
				if x.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(x.Value)
				if err != nil {
					return true
				}
				where := fmt.Sprintf("%s:%d", rel, fset.Position(x.Pos()).Line)
				if absPath.MatchString(s) {
					if strings.HasSuffix(s, "/") {
						dataDirs = append(dataDirs, s)
					} else {
						if st, err := os.Stat(s); err == nil && st.IsDir() {
							dataDirs = append(dataDirs, s)
						}
						needs = append(needs, need{"file", s, where})
					}
				} else if dataFile.MatchString(s) {
					fileNames = append(fileNames, need{"file", s, where})
				}
			}
			return true
		})
		return nil
	})
	// A bare file name is a need where it lives in one of the data
	// directories the code names (dataDir + "messi5.jpg").
	for _, fn := range fileNames {
		for _, d := range dataDirs {
			p := filepath.Join(d, fn.name)
			if _, err := os.Stat(p); err == nil {
				needs = append(needs, need{"file", p, fn.where})
			}
		}
	}
	return needs, err
}

// execCallee returns the name of a call that runs or looks up a program by
// name: exec.Command, exec.CommandContext, exec.LookPath, and the test
// helpers that wrap them (testkit.NeedCommand, chromedp.ExecPath).
func execCallee(c *ast.CallExpr) string {
	var name string
	switch f := c.Fun.(type) {
	case *ast.SelectorExpr:
		name = f.Sel.Name
	case *ast.Ident:
		name = f.Name
	}
	switch name {
	case "Command", "CommandContext", "LookPath", "NeedCommand", "ExecPath":
		return name
	}
	return ""
}

func scanIncludes(path, rel string, needs *[]need) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if m := includeRe.FindStringSubmatch(line); m != nil {
			*needs = append(*needs, need{"header", m[1], rel})
		}
	}
	return nil
}

// scanShell finds the commands the shell scripts run: words in command
// position that are not builtins, keywords or functions of the scripts.
func scanShell(root string) ([]need, error) {
	var needs []need
	funcs := map[string]bool{}
	funcRe := regexp.MustCompile(`^\s*(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)\s*\{`)
	type line struct {
		rel, text string
		n         int
	}
	var lines []line
	err := walk(root, func(path string) error {
		if filepath.Ext(path) != ".sh" && !strings.HasSuffix(path, "/.ci/run") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(strings.NewReader(shellCode(string(b))))
		n := 0
		heredoc := ""
		for sc.Scan() {
			n++
			t := sc.Text()
			if heredoc != "" {
				if strings.TrimSpace(t) == heredoc {
					heredoc = ""
				}
				continue
			}
			if m := regexp.MustCompile(`<<-?\s*'?"?(\w+)`).FindStringSubmatch(t); m != nil {
				heredoc = m[1]
			}
			if m := funcRe.FindStringSubmatch(t); m != nil {
				funcs[m[1]] = true
			}
			lines = append(lines, line{rel, t, n})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Command position: line start, after a separator, or after a word that
	// runs its argument.
	sep := regexp.MustCompile(`(^|;|&&|\|\||\||\$\(|\(|\bthen\b|\bdo\b|\belse\b|!|\bexec\b|\bcommand -v\b|\bsudo\b|\$sudo\b|\btime\b|\bxargs\b)\s*([A-Za-z][\w.+-]*)`)
	inArray := false
	for _, l := range lines {
		t := l.text
		if i := strings.Index(t, " #"); i >= 0 {
			t = t[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(t), "#") {
			continue
		}
		// Array literals spread over lines are data, not commands.
		if inArray {
			if i := strings.Index(t, ")"); i >= 0 {
				inArray = false
				t = t[i+1:]
			} else {
				continue
			}
		}
		if i := strings.Index(t, "=("); i >= 0 {
			if j := strings.Index(t[i:], ")"); j >= 0 {
				t = t[:i+1] + t[i+j+1:]
			} else {
				inArray = true
				t = t[:i+1]
			}
		}
		t = arith.ReplaceAllString(t, "")
		t = testExpr.ReplaceAllString(t, "")
		for _, m := range sep.FindAllStringSubmatchIndex(t, -1) {
			w := t[m[4]:m[5]]
			// NAME=value and NAME+=(…) are assignments, not commands.
			if rest := t[m[5]:]; strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, "+=") || strings.HasPrefix(rest, "[") {
				continue
			}
			if shellWords[w] || funcs[w] {
				continue
			}
			needs = append(needs, need{"command", w, fmt.Sprintf("%s:%d", l.rel, l.n)})
		}
	}
	return needs, nil
}

// shellCode blanks the text of quoted strings (which may span lines, as awk
// programs do) so that only code is scanned; command substitutions inside
// double quotes stay. Newlines are kept so line numbers still match.
func shellCode(src string) string {
	var b strings.Builder
	inSingle, inDouble := false, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\\' && !inSingle && i+1 < len(src):
			b.WriteString("  ")
			i++
			continue
		case inSingle:
			if c == '\'' {
				inSingle = false
			}
		case inDouble:
			if c == '"' {
				inDouble = false
			} else if c == '$' && i+1 < len(src) && src[i+1] == '(' {
				end := matchParen(src, i+1)
				b.WriteString("$(")
				b.WriteString(shellCode(src[i+2 : end]))
				if end < len(src) {
					b.WriteByte(')')
				}
				i = end
				continue
			}
		default:
			switch {
			case c == '\'':
				inSingle = true
			case c == '"':
				inDouble = true
			case c == '#' && (i == 0 || strings.ContainsRune(" \t\n;", rune(src[i-1]))):
				for i+1 < len(src) && src[i+1] != '\n' {
					i++
				}
				continue
			}
			b.WriteByte(c)
			continue
		}
		if c == '\n' {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// matchParen returns the index of the parenthesis closing the one at open,
// skipping quoted text.
func matchParen(src string, open int) int {
	depth := 0
	inSingle, inDouble := false, false
	for i := open; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\\' && !inSingle:
			i++
		case inSingle:
			inSingle = c != '\''
		case c == '\'' && !inDouble:
			inSingle = true
		case c == '"':
			inDouble = !inDouble
		case inDouble:
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return len(src)
}

// scanPython finds the modules the Python code imports that are neither
// in the standard library nor the project's own: they must come from Debian
// packages for /usr/bin/python3, the interpreter the tests and examples run.
func scanPython(root string) ([]need, error) {
	var needs []need
	own := map[string]bool{}
	re := regexp.MustCompile(`^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*))`)
	type imp struct{ mod, where string }
	var imps []imp
	err := walk(root, func(path string) error {
		if filepath.Ext(path) != ".py" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		own[strings.TrimSuffix(filepath.Base(path), ".py")] = true
		own[filepath.Base(filepath.Dir(path))] = true
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				mod := m[1] + m[2]
				imps = append(imps, imp{mod, fmt.Sprintf("%s:%d", rel, i+1)})
			}
		}
		return nil
	})
	if err != nil || len(imps) == 0 {
		return nil, err
	}
	out, err := exec.Command("/usr/bin/python3", "-c", "import sys; print(' '.join(sorted(sys.stdlib_module_names)))").Output()
	if err != nil {
		return []need{{"command", "/usr/bin/python3", imps[0].where}}, nil
	}
	stdlib := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		stdlib[m] = true
	}
	for _, im := range imps {
		top := strings.SplitN(im.mod, ".", 2)[0]
		if stdlib[top] || own[top] || strings.HasPrefix(im.mod, ".") {
			continue
		}
		needs = append(needs, need{"python", im.mod, im.where})
	}
	return needs, nil
}

// pythonOrigins asks /usr/bin/python3 once where each module is found.
func pythonOrigins(mods []string) map[string]string {
	origins := map[string]string{}
	if len(mods) == 0 {
		return origins
	}
	script := `import importlib.util, sys
for m in sys.argv[1:]:
    try:
        s = importlib.util.find_spec(m)
    except Exception:
        s = None
    o = s and (s.origin if s.origin not in (None, "namespace") else next(iter(s.submodule_search_locations or []), None))
    print(m, o or "")`
	out, err := exec.Command("/usr/bin/python3", append([]string{"-c", script}, mods...)...).Output()
	if err != nil {
		return origins
	}
	for _, line := range strings.Split(string(out), "\n") {
		if m, o, ok := strings.Cut(line, " "); ok && o != "" {
			origins[m] = o
		}
	}
	return origins
}

// scanProto finds the imports of the .proto files that are not in proto/.
func scanProto(root string) ([]need, error) {
	var needs []need
	re := regexp.MustCompile(`^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"`)
	err := walk(root, func(path string) error {
		if filepath.Ext(path) != ".proto" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				if _, err := os.Stat(filepath.Join(filepath.Dir(path), m[1])); err == nil {
					continue
				}
				needs = append(needs, need{"proto", m[1], rel})
			}
		}
		return nil
	})
	return needs, err
}

// walk visits the repository's files, skipping dependencies, build output
// and generated or fetched trees.
func walk(root string, fn func(path string) error) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "dist", "data", "bin", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if filepath.Dir(path) == filepath.Join(root, "scripts", "checkdeps") {
			return nil // its own word lists and test cases are not needs
		}
		return fn(path)
	})
}

func dedupe(needs []need) []need {
	seen := map[string]bool{}
	var out []need
	for _, n := range needs {
		k := n.kind + "\x00" + n.name
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kind+out[i].name < out[j].kind+out[j].name })
	return out
}

// located is a need with the file behind it and the packages owning that file.
type located struct {
	need
	why     string // set when no file is needed (Go tools, non-Debian commands)
	path    string
	pkgs    []string
	problem string // set when the file is missing or owned by no package
}

// locate finds the file behind each need and asks dpkg once for the owners
// of all of them.
func locate(needs []need, goTools map[string]bool) []located {
	out := make([]located, len(needs))
	var cands []string
	var mods []string
	for _, n := range needs {
		if n.kind == "python" {
			mods = append(mods, n.name)
		}
	}
	origins := pythonOrigins(mods)
	for i, n := range needs {
		out[i].need = n
		var paths []string
		switch n.kind {
		case "command":
			if why, ok := nonDebian[n.name]; ok {
				out[i].why = why
				continue
			}
			if goTools[n.name] {
				out[i].why = "go install (need_go_tool)"
				continue
			}
			if strings.HasPrefix(n.name, "/") {
				paths = []string{n.name}
			} else if p, err := exec.LookPath(n.name); err == nil {
				paths = []string{p}
			}
		case "header":
			paths = headerPaths(n.name)
		case "pkgconf":
			if b, err := exec.Command("pkg-config", "--path", n.name).Output(); err == nil {
				paths = []string{strings.TrimSpace(string(b))}
			}
		case "proto":
			paths = []string{filepath.Join("/usr/include", n.name)}
		case "file":
			if why, problem, ok := npmModel(n); ok {
				out[i].why, out[i].problem = why, problem
				continue
			}
			paths = []string{n.name}
		case "python":
			if o := origins[n.name]; o != "" {
				paths = []string{o}
			}
		}
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				out[i].path = p
				break
			}
		}
		if out[i].path == "" {
			out[i].problem = fmt.Sprintf("%s %q (%s) is not on this machine; add the Debian package that provides it to scripts/lib.sh", n.kind, n.name, n.where)
			continue
		}
		cands = append(cands, pathVariants(out[i].path)...)
	}
	owners := dpkgOwners(cands)
	for i := range out {
		if out[i].path == "" {
			continue
		}
		for _, c := range pathVariants(out[i].path) {
			if p := owners[c]; len(p) > 0 {
				out[i].pkgs = p
				break
			}
		}
		if len(out[i].pkgs) == 0 {
			out[i].problem = fmt.Sprintf("%s %q (%s, %s) belongs to no Debian package; the setup scripts must install it", out[i].kind, out[i].name, out[i].path, out[i].where)
		}
	}
	return out
}

// npmModel judges a file in the models directory the setup fills from npm
// rather than from Debian: the directory itself and the files need_models
// installs are provided (when they are on this machine, that is when the
// setup ran); anything else there is not.
func npmModel(n need) (why, problem string, ok bool) {
	p := filepath.Clean(n.name)
	if modelsDir == "" || (p != modelsDir && !strings.HasPrefix(p, modelsDir+"/")) {
		return "", "", false
	}
	if p != modelsDir && !installedModels[p] {
		return "", fmt.Sprintf("file %q (%s) is in %s, but need_models in scripts/lib.sh does not install it", n.name, n.where, modelsDir), true
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Sprintf("file %q (%s) is not on this machine; scripts/setup-product.sh (need_models) installs it", n.name, n.where), true
	}
	return "npm (need_models in scripts/lib.sh)", "", true
}

// verdict says whether a located need is covered by the closure of the
// setup lists.
func verdict(l located, closure map[string]bool) (string, string) {
	if l.why != "" {
		return l.why, ""
	}
	if l.problem != "" {
		return "", l.problem
	}
	for _, p := range l.pkgs {
		if closure[p] || baseSystem(p) {
			return p, ""
		}
	}
	return "", fmt.Sprintf("%s %q (%s) comes from Debian package %s, which the setup scripts do not install: add it to PRODUCT_APT or TEST_APT in scripts/lib.sh",
		l.kind, l.name, l.where, strings.Join(l.pkgs, " or "))
}

var includeDirs []string

// headerPaths lists where the compiler may find a header.
func headerPaths(h string) []string {
	if includeDirs == nil {
		includeDirs = []string{"/usr/include", "/usr/include/x86_64-linux-gnu", "/usr/include/opencv4"}
		if out, err := exec.Command("bash", "-c", "echo | g++ -xc++ -E -v - 2>&1 | sed -n '/#include <...>/,/End of search/p' | grep '^ /'").Output(); err == nil {
			includeDirs = append(strings.Fields(string(out)), includeDirs...)
		}
	}
	var out []string
	for _, d := range includeDirs {
		out = append(out, filepath.Join(d, h))
	}
	return out
}

// pathVariants are the names dpkg may know a file by: as named, with
// symlinks resolved (alternatives), and across the /bin → /usr/bin merge.
func pathVariants(path string) []string {
	cands := []string{path}
	if r, err := filepath.EvalSymlinks(path); err == nil && r != path {
		cands = append(cands, r)
	}
	base := filepath.Base(path)
	if strings.Count(path, "/") <= 3 {
		for _, d := range []string{"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"} {
			if p := d + base; p != path {
				cands = append(cands, p)
			}
		}
	}
	return cands
}

// dpkgOwners asks dpkg -S once which packages own each path.
func dpkgOwners(paths []string) map[string][]string {
	owners := map[string][]string{}
	if len(paths) == 0 {
		return owners
	}
	// dpkg -S exits non-zero when some path has no owner; its output for
	// the others is still good.
	out, _ := exec.Command("dpkg", append([]string{"-S"}, paths...)...).Output()
	for _, line := range strings.Split(string(out), "\n") {
		i := strings.Index(line, ": ")
		if i <= 0 {
			continue
		}
		path := strings.TrimSpace(line[i+2:])
		for _, p := range strings.Split(line[:i], ", ") {
			p = strings.TrimSuffix(p, ":amd64")
			if !slices.Contains(owners[path], p) {
				owners[path] = append(owners[path], p)
			}
		}
	}
	return owners
}

var baseCache = map[string]bool{}

// baseSystem reports whether a package is on every Debian system (Essential,
// or Priority required or important), so no setup needs to install it.
func baseSystem(pkg string) bool {
	if v, ok := baseCache[pkg]; ok {
		return v
	}
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Essential} ${Priority}", pkg).Output()
	f := strings.Fields(string(out))
	v := len(f) == 2 && (f[0] == "yes" || f[1] == "required" || f[1] == "important")
	baseCache[pkg] = v
	return v
}
