package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentExecutionsFollowTheirOwnProgress uploads several executions
// at once and follows each one's Server-Sent Events: every stream must carry
// only its own execution's progress, and its result must be downloadable
// when its stream ends (stream writers outlive their handlers, so request
// buffers must not leak into them).
func TestConcurrentExecutionsFollowTheirOwnProgress(t *testing.T) {
	img, err := os.ReadFile("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
	if err != nil {
		t.Skip("opencv-doc not installed")
	}
	ts := startServer(t, testConfig(t.TempDir()))
	if st, body, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("small", step("a", "resize", map[string]any{"width": 160}))); st != 201 {
		t.Fatalf("pipeline: %d %s", st, body)
	}
	upload := func() (string, error) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		_ = w.WriteField("pipeline", "small")
		fw, _ := w.CreateFormFile("files", "messi.jpg")
		_, _ = fw.Write(img)
		_ = w.Close()
		resp, err := http.Post(ts.base+"/api/v1/executions", w.FormDataContentType(), &buf)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var created struct{ ID string }
		if err := json.NewDecoder(resp.Body).Decode(&created); err != nil || resp.StatusCode != 202 {
			return "", fmt.Errorf("upload: %d %v", resp.StatusCode, err)
		}
		return created.ID, nil
	}
	follow := func(id string) error {
		resp, err := http.Get(ts.base + "/api/v1/executions/" + id + "/events")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || line == "{}" {
				continue
			}
			var p struct{ Execution string }
			if err := json.Unmarshal([]byte(line), &p); err != nil {
				return err
			}
			if p.Execution != id {
				return fmt.Errorf("stream of %s carried progress of %s", id, p.Execution)
			}
		}
		r, err := http.Get(ts.base + "/api/v1/executions/" + id + "/files/0/image")
		if err != nil {
			return err
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			return fmt.Errorf("%s: output not downloadable when its stream ended: %d", id, r.StatusCode)
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				id, err := upload()
				if err == nil {
					err = follow(id)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
