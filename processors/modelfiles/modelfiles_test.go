package modelfiles_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
)

func TestConfinement(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "names.txt"), []byte("cat\ndog\n"), 0o644))
	must(os.MkdirAll(filepath.Join(root, "yolo", "1"), 0o755))
	must(os.WriteFile(filepath.Join(root, "yolo", "1", "model.onnx"), []byte("model"), 0o644))
	must(os.WriteFile(filepath.Join(root, "big.onnx"), make([]byte, 2000), 0o644))
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("root:x:0:0"), 0o600))
	must(os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "escape.txt")))
	must(os.Symlink("yolo/1/model.onnx", filepath.Join(root, "inside.onnx")))
	must(os.Symlink("/etc", filepath.Join(root, "etc")))
	must(syscall.Mkfifo(filepath.Join(root, "fifo.txt"), 0o644))
	d := modelfiles.New(root)

	for _, ok := range []struct{ name, want string }{
		{"names.txt", "cat\ndog\n"},
		{filepath.Join(root, "names.txt"), "cat\ndog\n"},
		{"yolo/1/model.onnx", "model"},
		{"./yolo/1/model.onnx", "model"},
		{"inside.onnx", "model"},
	} {
		b, err := d.ReadFile(ok.name, 1000)
		if err != nil || string(b) != ok.want {
			t.Errorf("%s: %q %v", ok.name, b, err)
		}
	}
	// OpenCV's cascades are readable by name and by path.
	if _, err := os.Stat("/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"); err == nil {
		for _, name := range []string{"haarcascade_frontalface_default.xml", "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"} {
			if err := d.Check(name, modelfiles.MaxCascadeBytes); err != nil {
				t.Errorf("shipped cascade %s: %v", name, err)
			}
		}
	}

	for _, bad := range []string{
		"/etc/shadow", "/etc/passwd", "/dev/zero", "/proc/self/environ", filepath.Join(outside, "secret"),
		"../" + filepath.Base(outside) + "/secret", "yolo/../names.txt", "..", "", "escape.txt", "etc/passwd",
		"fifo.txt", "big.onnx", "yolo", "missing.onnx", "names.txt\x00.onnx",
	} {
		b, err := d.ReadFile(bad, 1000)
		if !errors.Is(err, modelfiles.ErrNotAllowed) || b != nil {
			t.Errorf("%q: %q %v, want ErrNotAllowed", bad, b, err)
			continue
		}
		if strings.Contains(err.Error(), "root:") || strings.Contains(err.Error(), "no such file or directory") {
			t.Errorf("%q: error tells too much: %v", bad, err)
		}
	}
	// A path outside gives the same answer whether it exists or not.
	_, e1 := d.ReadFile(filepath.Join(outside, "secret"), 1000)
	_, e2 := d.ReadFile(filepath.Join(outside, "nothing"), 1000)
	if strings.ReplaceAll(e1.Error(), "secret", "X") != strings.ReplaceAll(e2.Error(), "nothing", "X") {
		t.Errorf("existence oracle:\n%v\n%v", e1, e2)
	}
	// Without a models directory only the shipped cascades are readable.
	if _, err := modelfiles.New("").ReadFile(filepath.Join(root, "names.txt"), 1000); !errors.Is(err, modelfiles.ErrNotAllowed) {
		t.Errorf("no models_dir: %v", err)
	}
	var none *modelfiles.Dir
	if _, err := none.ReadFile("names.txt", 1000); !errors.Is(err, modelfiles.ErrNotAllowed) {
		t.Errorf("nil Dir: %v", err)
	}
}

// TestInstalledModels: the models the setup installs are readable by a
// relative name, with a models directory or without, and a file of the same
// name in models_dir takes their place.
func TestInstalledModels(t *testing.T) {
	const name = "blazeface/face_detection_back_256x256_barracuda.onnx" // scripts/lib.sh, need_models
	want, err := os.ReadFile(filepath.Join(modelfiles.Installed, name))
	if err != nil {
		t.Fatalf("the installed model (scripts/setup-product.sh installs it): %v", err)
	}
	root := t.TempDir()
	for _, d := range []*modelfiles.Dir{modelfiles.New(""), modelfiles.New(root), nil} {
		got, err := d.ReadFile(name, modelfiles.MaxModelBytes)
		if err != nil || string(got) != string(want) {
			t.Fatalf("models_dir %q: %d bytes, %v", d.Root(), len(got), err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "blazeface"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, name), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := modelfiles.New(root).ReadFile(name, modelfiles.MaxModelBytes); err != nil || string(got) != "mine" {
		t.Fatalf("models_dir's own file: %q, %v", got, err)
	}
	// Absolute names inside the installed directory work; ".." out of it not.
	if _, err := modelfiles.New(root).ReadFile(filepath.Join(modelfiles.Installed, name), modelfiles.MaxModelBytes); err != nil {
		t.Fatal(err)
	}
	if _, err := modelfiles.New(root).ReadFile(modelfiles.Installed+"/../../../../etc/passwd", 1<<20); !errors.Is(err, modelfiles.ErrNotAllowed) {
		t.Fatalf("escape from the installed directory: %v", err)
	}
}
