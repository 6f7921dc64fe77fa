package docs

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/imageflowcanvas/imageflow"

// TestReadmeTableMatchesPackages checks that the README's package table
// names exactly the packages `go list ./...` prints, and that each package
// has a doc comment saying its job.
func TestReadmeTableMatchesPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, "\t")
		rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
		pkgs[rel] = true
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no doc comment saying its job", rel)
		}
	}

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table := section(string(readme), "| package | owns |")
	if table == "" {
		t.Fatal("README has no package table")
	}
	listed := map[string]bool{}
	cell := regexp.MustCompile("`([^`]+)`")
	for _, row := range strings.Split(table, "\n")[2:] {
		first := strings.Split(row, "|")[1]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			listed[m[1]] = true
		}
	}
	for p := range pkgs {
		if !listed[p] {
			t.Errorf("package %s is missing from the README's package table", p)
		}
	}
	for p := range listed {
		if !pkgs[p] {
			t.Errorf("the README's package table names %s, which `go list ./...` does not print", p)
		}
	}
}

// TestArchitectureNamesPackages checks that the design page names every
// package that is not a test helper.
func TestArchitectureNamesPackages(t *testing.T) {
	arch, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", module+"/...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
		if strings.HasSuffix(rel, "test") || strings.HasPrefix(rel, "proto/") || rel == "docs" {
			continue // test helpers, generated code and this package
		}
		base := rel[strings.LastIndex(rel, "/")+1:]
		if !strings.Contains(string(arch), "`"+rel+"`") && !strings.Contains(string(arch), "`"+base+"`") {
			t.Errorf("docs/architecture.md does not name package %s", rel)
		}
	}
}

// section returns the Markdown table that starts with header.
func section(doc, header string) string {
	i := strings.Index(doc, header)
	if i < 0 {
		return ""
	}
	rest := doc[i:]
	if j := strings.Index(rest, "\n\n"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// TestReadmePackageListsMatchSetup keeps the README's table of what the two
// commands install equal to the lists the setup scripts install from
// (scripts/lib.sh), so a newcomer reads what a fresh machine gets.
func TestReadmePackageListsMatchSetup(t *testing.T) {
	lib, err := os.ReadFile("../scripts/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	shellList := func(name string) []string {
		m := regexp.MustCompile(`(?s)\n` + name + `=\((.*?)\)`).FindSubmatch(lib)
		if m == nil {
			t.Fatalf("scripts/lib.sh has no %s=(...)", name)
		}
		var out []string
		for _, line := range strings.Split(string(m[1]), "\n") {
			line, _, _ = strings.Cut(line, "#")
			out = append(out, strings.Fields(line)...)
		}
		sort.Strings(out)
		return out
	}
	// The first backticked list in a row's second cell.
	readmeList := func(row string) []string {
		m := regexp.MustCompile(`\n\| ` + regexp.QuoteMeta(row) + `[^|]*\| [^|` + "`" + `]*` + "`([^`]+)`").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README has no row %q with a package list", row)
		}
		out := strings.Fields(string(m[1]))
		sort.Strings(out)
		return out
	}
	for _, c := range []struct{ row, list string }{
		{"the product", "PRODUCT_APT"},
		{"the tests", "TEST_APT"},
	} {
		if got, want := readmeList(c.row), shellList(c.list); !slices.Equal(got, want) {
			t.Errorf("README row %q lists %v; scripts/lib.sh %s is %v", c.row, got, c.list, want)
		}
	}
}
