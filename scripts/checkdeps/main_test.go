package main

import (
	"os"
	"strings"
	"testing"
)

// TestSetupListsComplete is the check itself: everything the tests and
// scripts use comes from a package the setup installs.
func TestSetupListsComplete(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	results, err := run(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 50 {
		t.Fatalf("only %d needs found; the scanners lost track of the repository", len(results))
	}
	for _, r := range results {
		if r.problem != "" {
			t.Error(r.problem)
		}
	}
}

// TestTracesInstalledModel: the BlazeFace model the detect step reads by
// default is traced to the setup's npm install, not to a Debian package.
func TestTracesInstalledModel(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	results, err := run(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range results {
		if strings.HasSuffix(r.name, "/blazeface/face_detection_back_256x256_barracuda.onnx") {
			found = true
			if r.problem != "" || !strings.Contains(r.pkg, "need_models") {
				t.Errorf("%s: package %q, problem %q", r.name, r.pkg, r.problem)
			}
		}
	}
	if !found {
		t.Error("the installed BlazeFace model is not traced")
	}
	if _, problem, ok := npmModel(need{"file", modelsDir + "/other/x.onnx", "x.go:1"}); !ok || !strings.Contains(problem, "does not install it") {
		t.Errorf("a file need_models does not install: %q", problem)
	}
}

// TestNoticesMissingPackage drops packages from the setup lists and expects
// the check to name them, so a list that loses a package fails CI.
func TestNoticesMissingPackage(t *testing.T) {
	if os.Getenv("CI") == "" {
		if _, err := os.Stat("/usr/include/google/protobuf/struct.proto"); err != nil {
			t.Skip("the test packages are not installed (scripts/setup-test.sh)")
		}
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newChecker(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ drop, want string }{
		{"libprotobuf-dev", `"google/protobuf/struct.proto"`},
		{"kcat", `command "kcat"`},
		{"opencv-doc", "messi5.jpg"},
		{"opencv-data", "haarcascade_frontalface_default.xml"},
		{"chromium", `command "chromium"`},
		{"python3-grpcio", `python "grpc"`},
	} {
		results, err := c.check([]string{tc.drop})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range results {
			if strings.Contains(r.problem, tc.want) && strings.Contains(r.problem, tc.drop) {
				found = true
			}
		}
		if !found {
			t.Errorf("without %s: no problem names %s and the package", tc.drop, tc.want)
		}
	}
}

func TestShellCodeBlanksQuotes(t *testing.T) {
	src := "x=\"$(awk '{print $1}' f)\" # comment\necho 'multi\nline' done\n"
	got := shellCode(src)
	if strings.Contains(got, "print") || strings.Contains(got, "comment") || strings.Contains(got, "multi") {
		t.Fatalf("quoted text or comments kept: %q", got)
	}
	if !strings.Contains(got, "awk") || strings.Count(got, "\n") != strings.Count(src, "\n") {
		t.Fatalf("command substitution or line count lost: %q", got)
	}
}
