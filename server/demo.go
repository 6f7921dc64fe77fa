package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// Demo ids: a camera playing a real video and a people pipeline, so the
// first page a newcomer opens shows live video with boxes.
const (
	DemoCamera   = "demo"
	DemoPipeline = "people"
	// demoVideo is opencv-doc's clip of people walking (Debian opencv-doc).
	demoVideo = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
)

// ensureDemo creates the demo camera and its pipeline on first start only:
// a marker file remembers it, so a user who deletes the demo keeps it deleted.
func (s *Server) ensureDemo(ctx context.Context) error {
	marker := filepath.Join(s.Config.DataDir, "demo-created")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	video, err := s.demoVideo(ctx)
	if err != nil {
		return err
	}
	steps := []*busv1.Step{
		// The background model works at half the frame's width (a third of
		// the full-size cost, as many people found: processors/builtin
		// TestMotionWorkWidthFindsThePeople); its kernel counts in those
		// pixels.
		{Id: "motion", Processor: "motion", Params: mustStruct(map[string]any{"min_area": 300, "work_width": 320, "kernel_size": 3})},
		// HOG only inside the motion regions (a fraction of the frame's
		// cost). vtest.avi's people are 50-110 px tall in the 640x480
		// frames, smaller than HOG's window needs: each region is scaled
		// so that people about as tall as its motion fill the window, and
		// only those sizes are searched (region_sizing motion_height; a
		// quarter of the cost of enlarging every region to 256 px and
		// searching all sizes, as many people found), so results follow
		// their frames within tens of milliseconds. Only the person boxes
		// go on to the viewer.
		{Id: "people", Processor: "detect", Inputs: []string{"motion"},
			Params: mustStruct(map[string]any{"backend": "hog", "gate": "only_if_motion", "regions": "motion",
				"region_sizing": "motion_height", "tight_boxes": true, "keep_input_detections": false, "win_stride": 8,
				"scale": 1.15, "padding": 0})},
	}
	now := time.Now().UnixNano()
	p := &busv1.Pipeline{Id: DemoPipeline, Name: "People (HOG where things move)",
		Description: "Background subtraction finds moving regions; the HOG people detector looks only inside them and reports people.",
		Steps:       steps, CreatedUnixNano: now, UpdatedUnixNano: now}
	if err := s.Registry.ValidatePipeline(p); err != nil {
		return fmt.Errorf("demo pipeline: %w", err)
	}
	if err := s.pipelines.create(ctx, p.Id, p); err != nil && !errors.Is(err, ErrExists) {
		return err
	}
	cam := &busv1.Camera{Id: DemoCamera, Name: "Demo: people walking", Source: "file://" + video,
		Enabled: true, Pipeline: DemoPipeline, CreatedUnixNano: now, UpdatedUnixNano: now}
	if err := s.cameras.create(ctx, cam.Id, cam); err != nil && !errors.Is(err, ErrExists) {
		return err
	}
	s.Logger.Info("demo camera created", "camera", DemoCamera, "video", video)
	return os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o640)
}

// demoVideo returns opencv-doc's vtest.avi, or generates a clip with ffmpeg
// when that package is missing. Either lies in a media directory (file://
// sources play nothing else): vtest.avi's directory is one by default, the
// generated clip goes into the first one (<data>/media by default).
func (s *Server) demoVideo(ctx context.Context) (string, error) {
	if _, err := s.sources.mediaFile("file://" + demoVideo); err == nil {
		return demoVideo, nil
	}
	out := filepath.Join(s.Config.mediaDirs()[0], "demo.mp4")
	if _, err := os.Stat(out); err == nil {
		return filepath.Abs(out)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o750); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-t", "30", "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("no %s and ffmpeg could not make a demo clip: %v: %s", demoVideo, err, b)
	}
	return filepath.Abs(out)
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}
