package main

import (
	"os"
	"testing"
)

// TestBlazeFaceInstalledModel runs the blazeface backend through the binary
// with a fresh data directory (so an empty models_dir): the default model
// resolves to the one the setup installs, both in `imageflow serve` and in
// `imageflow processor serve detect` (no --models), and they agree.
func TestBlazeFaceInstalledModel(t *testing.T) {
	img, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Fatalf("opencv-doc not installed: %v", err)
	}
	procAddr := freePort(t)
	startProcessor(t, procAddr, "detect")
	_, li, _ := startBinary(t, t.TempDir())
	postPipelines(t, li.HTTP,
		`{"id":"local","steps":[{"id":"face","processor":"detect","params":{"backend":"blazeface"}}]}`,
		`{"id":"remote","steps":[{"id":"face","processor":"grpc://`+procAddr+`","params":{"backend":"blazeface"}}]}`)
	local := streamOnce(t, li.GRPC, "local", img)
	remote := streamOnce(t, li.GRPC, "remote", img)
	dets := local.GetResult().GetDetections()
	if local.Error != "" || remote.Error != "" || len(dets) != 1 {
		t.Fatalf("local %+v remote %+v", local, remote)
	}
	// Messi's face (see processors/builtin's tests): about x 225..260, y 95..130.
	d := dets[0]
	if d.Label != "face" || d.X < 215 || d.Y < 85 || d.X+d.W > 275 || d.Y+d.H > 140 {
		t.Fatalf("face %+v", d)
	}
	if boxSet(local) != boxSet(remote) {
		t.Fatalf("remote step differs from the built-in:\nlocal  %s\nremote %s", boxSet(local), boxSet(remote))
	}
}
