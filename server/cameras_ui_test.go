package server

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestCameraEditTestAndDelete manages cameras from the dashboard as a user
// does: the demo camera's source is tested on the server (codec, size and
// rate shown), the camera is switched to another pipeline and saved (the API
// then has it, with the recording and the zone the form does not show, and
// its live page draws that pipeline's boxes, and saving its zones there
// keeps the recording too), and a second camera is deleted after the
// confirmation click (the API no longer has it).
func TestCameraEditTestAndDelete(t *testing.T) {
	needBrowser(t)
	cfg := testConfig(t.TempDir())
	cfg.Demo = true
	ts := startServer(t, cfg)
	waitCameraOnline(t, ts, DemoCamera)
	if st, b, _ := ts.do("POST", "/api/v1/pipelines", "", pipelineBody("walkers",
		step("small", "resize", map[string]any{"width": 640}),
		step("people", "detect", map[string]any{"backend": "hog", "label": "walker"}, "small"))); st != 201 {
		t.Fatalf("pipeline: %d %s", st, b)
	}
	if st, b, _ := ts.do("POST", "/api/v1/cameras", "", map[string]any{"id": "spare", "source": "publish"}); st != 201 {
		t.Fatalf("camera: %d %s", st, b)
	}
	// The demo camera records and has a zone, which the edit form does not
	// show: PUT replaces the whole camera, so the form's save must send them.
	_, b, _ := ts.do("GET", "/api/v1/cameras/demo", "", nil)
	var demo cameraView
	if err := json.Unmarshal(b, &demo); err != nil {
		t.Fatal(err)
	}
	porch := []zoneJSON{{Name: "porch", Points: [][2]float32{{0, 0.5}, {1, 0.5}, {1, 1}, {0, 1}}, Labels: []string{"person"}, MinDwellMS: 500}}
	if st, b, _ := ts.do("PUT", "/api/v1/cameras/demo", "", map[string]any{"id": "demo", "name": demo.Name, "source": demo.Source,
		"pipeline": demo.Pipeline, "record": true, "record_retention": "72h", "record_max_bytes": 1 << 30, "zones": porch}); st != 200 {
		t.Fatalf("demo camera: %d %s", st, b)
	}

	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	tab, cancelTime := context.WithTimeout(tab, 3*time.Minute)
	defer cancelTime()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1400, 1000), chromedp.Navigate(ts.base+"/")); err != nil {
		t.Fatal(err)
	}
	card := func(id string) string { return fmt.Sprintf(`[data-testid="camera-card"][data-camera-id=%q]`, id) }
	waitJS(t, tab, `!!document.querySelector(`+jsString(card("demo")+` [data-testid="camera-edit"]`)+`) && !!document.querySelector(`+jsString(card("spare"))+`)`, 30*time.Second)

	if err := chromedp.Do(tab, chromedp.Click(card("demo")+` [data-testid="camera-edit"]`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `!!document.querySelector('[data-testid="edit-pipeline-input"] option[value="walkers"]')`, 15*time.Second)
	if err := chromedp.Do(tab, chromedp.Click(`[data-testid="edit-test-source"]`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `document.querySelector('[data-testid="edit-test-result"]')?.dataset.ok === 'true'`, 30*time.Second)
	shown, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('[data-testid="edit-test-result"]').textContent`))
	t.Logf("test source shows: %s", shown)
	if got, err := chromedp.Run(tab, chromedp.Evaluate[string](`(() => { const s = document.querySelector('[data-testid="edit-pipeline-input"]'); s.value = 'walkers'; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()`)); err != nil || got != "walkers" {
		t.Fatalf("choose pipeline: %q %v", got, err)
	}
	if err := chromedp.Do(tab, chromedp.Click(`[data-testid="edit-camera-submit"]`)); err != nil {
		t.Fatal(err)
	}
	getDemo := func() (cameraView, []byte) {
		_, b, _ := ts.do("GET", "/api/v1/cameras/demo", "", nil)
		var cam cameraView
		_ = json.Unmarshal(b, &cam)
		return cam, b
	}
	kept := func(cam cameraView) bool {
		return cam.Enabled && cam.Source == "file://"+demoVideo && cam.Record && cam.RecordRetention == "72h0m0s" &&
			cam.RecordMaxBytes == 1<<30 && reflect.DeepEqual(cam.Zones, porch)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		cam, b := getDemo()
		if cam.Pipeline == "walkers" {
			if !kept(cam) {
				t.Errorf("the edit changed more than the pipeline: %+v", cam)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API never showed the new pipeline: %s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Delete asks once more before it deletes.
	del := card("spare") + ` [data-testid="camera-delete"]`
	if err := chromedp.Do(tab, chromedp.Click(del)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `document.querySelector(`+jsString(del)+`).textContent.includes('Really')`, 10*time.Second)
	if st, _, _ := ts.do("GET", "/api/v1/cameras/spare", "", nil); st != 200 {
		t.Fatalf("the first click deleted the camera: %d", st)
	}
	if err := chromedp.Do(tab, chromedp.Click(del)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `!document.querySelector(`+jsString(card("spare"))+`)`, 15*time.Second)
	if st, b, _ := ts.do("GET", "/api/v1/cameras/spare", "", nil); st != 404 {
		t.Fatalf("deleted camera still in the API: %d %s", st, b)
	}

	// The live page draws the new pipeline's boxes.
	if err := chromedp.Do(tab, chromedp.Navigate(ts.base+"/cameras/demo")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, `!!(window.__ifc && window.__ifc.lastDrawn && window.__ifc.lastDrawn.count > 0)`, 60*time.Second)

	// Saving the zones there sends the rest of the camera too.
	before, _ := getDemo()
	waitJS(t, tab, `!!document.querySelector('[data-testid="zone-save"]')`, 15*time.Second)
	if err := chromedp.Do(tab, chromedp.Click(`[data-testid="zone-save"]`)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		cam, b := getDemo()
		if !cam.UpdatedAt.Equal(before.UpdatedAt) {
			if !kept(cam) || cam.Pipeline != "walkers" {
				t.Errorf("saving the zones changed the camera: %+v", cam)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the zones were never saved: %s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
