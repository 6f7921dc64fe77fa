package k3s

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/imageflowcanvas/imageflow/proto/processorv1"
)

// pythonKit is the build context of the Python processors' image.
var pythonKit = filepath.Join(repoRoot, "processors", "python")

// TestPythonProcessorManifest checks the Python example's Deployment
// against its image and the kit: the Dockerfile copies files that exist and
// installs Debian packages that exist; the container's exact command line,
// run from the kit directory (the image's WORKDIR holds the same files),
// serves the gRPC health service the probes ask, and the clahe processor.
func TestPythonProcessorManifest(t *testing.T) {
	b := loadKustomization(t, baseDir)
	var c *container
	for _, p := range b.pods(t) {
		if p.owner.Kind == "Deployment" && p.owner.Metadata.Name == "processor-clahe-python" {
			c = &p.w.Spec.Template.Spec.Containers[0]
		}
	}
	if c == nil {
		t.Fatal("no Deployment/processor-clahe-python")
	}
	d := parseDockerfileAt(t, filepath.Join(pythonKit, "Dockerfile"))
	if repo, _, _ := strings.Cut(c.Image, ":"); repo != "imageflowcanvas/processor-python" {
		t.Errorf("image %q, want imageflowcanvas/processor-python (processors/python/Dockerfile)", c.Image)
	}
	if !reflect.DeepEqual(c.Command, d.entrypoint) {
		t.Errorf("command %q, but the image's ENTRYPOINT is %q", c.Command, d.entrypoint)
	}
	stage := d.stages[len(d.stages)-1]
	for _, cp := range stage.copies {
		f := strings.Fields(cp)
		for _, src := range f[:len(f)-1] {
			if _, err := os.Stat(filepath.Join(pythonKit, src)); err != nil {
				t.Errorf("Dockerfile COPY %s: %v", src, err)
			}
		}
	}
	pkgs := stage.aptPackages()
	for _, want := range []string{"python3-grpcio", "python3-protobuf", "python3-opencv", "python3-numpy"} {
		if !contains(pkgs, want) {
			t.Errorf("the image does not install %s", want)
		}
	}
	if out, err := exec.Command("apt-cache", append([]string{"show", "--no-all-versions"}, pkgs...)...).CombinedOutput(); err == nil {
		for _, p := range pkgs {
			if !bytes.Contains(out, []byte("Package: "+p+"\n")) {
				t.Errorf("apt package %s does not exist", p)
			}
		}
	}
	for name, pr := range c.probes() {
		if pr.GRPC == nil {
			t.Errorf("%s is not a gRPC health probe", name)
		}
	}

	if _, err := exec.Command("/usr/bin/python3", "-c", "import grpc, cv2, numpy").CombinedOutput(); err != nil {
		t.Skip("Debian's python3-grpcio/python3-opencv/python3-numpy not installed: the command line is not run")
	}
	addr := freeAddr(t)
	args := append([]string{}, c.Args...)
	for i := range args {
		if args[i] == "--listen" && i+1 < len(args) {
			args[i+1] = addr
		}
	}
	cmd := exec.Command(c.Command[0], args...)
	cmd.Dir = pythonKit
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not SERVING (the kubelet's gRPC probe would fail): %v\n%s", args, err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := pb.NewProcessorClient(conn).Info(ctx, &pb.InfoRequest{})
	if err != nil || info.Name != "clahe" {
		t.Fatalf("Info: %v %v", info, err)
	}
}
