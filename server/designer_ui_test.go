package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// point is a spot on the page in CSS pixels.
type point struct{ X, Y float64 }

// centerOf answers the middle of the first element a CSS selector finds,
// scrolled into view.
func centerOf(t *testing.T, ctx context.Context, selector string) point {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.scrollIntoView({block: 'nearest'}); const r = e.getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, jsString(selector))
	p, err := chromedp.Run(ctx, chromedp.Evaluate[point](js))
	if err != nil {
		t.Fatalf("where is %s: %v", selector, err)
	}
	return p
}

// drag presses the left button at from, moves to to in steps and releases:
// the real pointer events a user's mouse makes.
func drag(t *testing.T, ctx context.Context, from, to point) {
	t.Helper()
	const steps = 8
	acts := []chromedp.Action[chromedp.Void]{
		chromedp.MouseEvent(chromedp.MouseMoved, from.X, from.Y),
		chromedp.MouseEvent(chromedp.MousePressed, from.X, from.Y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
	}
	for i := 1; i <= steps; i++ {
		x := from.X + (to.X-from.X)*float64(i)/steps
		y := from.Y + (to.Y-from.Y)*float64(i)/steps
		acts = append(acts, chromedp.MouseEvent(chromedp.MouseMoved, x, y, func(p *input.DispatchMouseEventParams) {
			p.Button, p.Buttons = input.MouseButtonLeft, 1
		}))
	}
	acts = append(acts, chromedp.MouseEvent(chromedp.MouseReleased, to.X, to.Y, chromedp.ButtonLeft, chromedp.ClickCount(1)))
	if err := chromedp.Do(ctx, acts...); err != nil {
		t.Fatalf("drag: %v", err)
	}
}

// retype replaces a field's text by typing keys over all of it ("\b" empties it).
func retype(t *testing.T, ctx context.Context, selector, keys string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.focus(); e.select(); return true; })()`, jsString(selector)))); err != nil {
		t.Fatalf("select %s: %v", selector, err)
	}
	if err := chromedp.Do(ctx, chromedp.KeyEvent(keys)); err != nil {
		t.Fatalf("type into %s: %v", selector, err)
	}
}

// clickAt clicks the left button at p.
func clickAt(t *testing.T, ctx context.Context, p point) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.MouseClickXY(p.X, p.Y)); err != nil {
		t.Fatalf("click: %v", err)
	}
}

// screenshot saves the page to /tmp/shots/name.png for the closing note.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	dir := "/tmp/shots"
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
}

const nodeSel = `[data-testid="step-node"][data-step=%q]`

// TestDesignerBuildsSavesAndTries drives the pipeline designer as a user
// does: three steps dragged from the palette onto the canvas, connected
// handle to handle, a parameter set through the inspector's form, saved (the
// server stores exactly that DAG); then a parameter only the server can
// judge (a missing cascade file) is rejected on the right node and nothing is
// saved; then "try it" on messi5.jpg shows every step's picture and time,
// with a box on the face step.
func TestDesignerBuildsSavesAndTries(t *testing.T) {
	needBrowser(t)
	if _, err := os.Stat(messiPath); err != nil {
		t.Skipf("opencv-doc not installed: %v", err)
	}
	ts := startServer(t, testConfig(t.TempDir()))
	tab, cancel := chromedp.NewContext(newBrowser(t))
	defer cancel()
	tab, cancelTime := context.WithTimeout(tab, 3*time.Minute)
	defer cancelTime()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(1500, 950), chromedp.Navigate(ts.base+"/pipelines/new")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitJS(t, tab, `document.querySelectorAll('[data-testid="palette-item"]').length >= 4 && !!document.querySelector('.react-flow__pane')`, 30*time.Second)

	// Drag three processors onto the canvas, left to right.
	canvas := centerOf(t, tab, `[data-testid="canvas"]`)
	for i, proc := range []string{"resize", "detect", "overlay"} {
		from := centerOf(t, tab, fmt.Sprintf(`[data-testid="palette-item"][data-processor=%q]`, proc))
		drag(t, tab, from, point{canvas.X - 350 + float64(i)*300, canvas.Y - 100 + float64(i)*60})
		waitJS(t, tab, fmt.Sprintf(`document.querySelectorAll('[data-testid="step-node"]').length === %d`, i+1), 10*time.Second)
	}
	// Connect output handle to input handle: resize -> detect -> overlay.
	for _, e := range [][2]string{{"resize", "detect"}, {"detect", "overlay"}} {
		from := centerOf(t, tab, fmt.Sprintf(nodeSel+` [data-testid="handle-out"]`, e[0]))
		to := centerOf(t, tab, fmt.Sprintf(nodeSel+` [data-testid="handle-in"]`, e[1]))
		drag(t, tab, from, to)
	}
	waitJS(t, tab, `document.querySelectorAll('.react-flow__edge').length === 2`, 10*time.Second)

	// Parameters through the inspector: resize width typed, detect's backend chosen.
	clickAt(t, tab, centerOf(t, tab, fmt.Sprintf(nodeSel+` .step-title`, "resize")))
	waitJS(t, tab, `document.querySelector('[data-testid="inspector-form"]')?.dataset.step === 'resize'`, 10*time.Second)
	if err := chromedp.Do(tab, chromedp.SendKeys(`[data-param="width"]`, "9999")); err != nil {
		t.Fatal(err)
	}
	// Validation as you type: 9999 is over the schema's maximum.
	waitJS(t, tab, `document.querySelector('[data-testid="param-error"]')?.textContent.includes('at most 8192')`, 10*time.Second)
	retype(t, tab, `[data-param="width"]`, "400")
	waitJS(t, tab, `document.querySelector('[data-param="width"]').value === '400' && !document.querySelector('[data-testid="param-error"]')`, 10*time.Second)
	clickAt(t, tab, centerOf(t, tab, fmt.Sprintf(nodeSel+` .step-title`, "detect")))
	waitJS(t, tab, `document.querySelector('[data-testid="inspector-form"]')?.dataset.step === 'detect'`, 10*time.Second)
	setSelect := func(param, value string) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const s = document.querySelector('[data-param=%q]'); s.focus(); s.value = %s; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()`, param, jsString(value))
		got, err := chromedp.Run(tab, chromedp.Evaluate[string](js))
		if err != nil || got != value {
			t.Fatalf("choose %s=%s: %q %v", param, value, got, err)
		}
	}
	setSelect("backend", "haar")

	if err := chromedp.Do(tab, chromedp.SendKeys(`[data-testid="pipeline-id"]`, "faces3")); err != nil {
		t.Fatal(err)
	}
	clickAt(t, tab, centerOf(t, tab, `[data-testid="designer-save"]`))
	waitJS(t, tab, `window.__ifc && window.__ifc.page === 'designer' && window.__ifc.id === 'faces3'`, 15*time.Second)
	screenshot(t, tab, "designer")

	st, body, _ := ts.do("GET", "/api/v1/pipelines/faces3", "", nil)
	if st != 200 {
		t.Fatalf("stored pipeline: %d %s", st, body)
	}
	type storedStep struct {
		ID        string         `json:"id"`
		Processor string         `json:"processor"`
		Params    map[string]any `json:"params"`
		Inputs    []string       `json:"inputs"`
	}
	var got struct{ Steps []storedStep }
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := []storedStep{
		{"resize", "resize", map[string]any{"width": 400.0}, []string{}},
		{"detect", "detect", map[string]any{"backend": "haar"}, []string{"resize"}},
		{"overlay", "overlay", map[string]any{}, []string{"detect"}},
	}
	if !reflect.DeepEqual(got.Steps, want) {
		t.Fatalf("stored DAG:\n got %+v\nwant %+v", got.Steps, want)
	}

	// A parameter only the server can judge: the node it names turns red
	// with the server's message, the others stay clean, nothing is stored.
	clickAt(t, tab, centerOf(t, tab, fmt.Sprintf(nodeSel+` .step-title`, "detect")))
	waitJS(t, tab, `document.querySelector('[data-testid="inspector-form"]')?.dataset.step === 'detect'`, 10*time.Second)
	if err := chromedp.Do(tab, chromedp.SendKeys(`[data-param="cascade"]`, "missing.xml")); err != nil {
		t.Fatal(err)
	}
	clickAt(t, tab, centerOf(t, tab, `[data-testid="designer-save"]`))
	waitJS(t, tab, fmt.Sprintf(`document.querySelector(%s).dataset.error.includes('missing.xml')`, jsString(fmt.Sprintf(nodeSel, "detect"))), 15*time.Second)
	if clean, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector(%s).dataset.error === '' && document.querySelector(%s).dataset.error === ''`,
		jsString(fmt.Sprintf(nodeSel, "resize")), jsString(fmt.Sprintf(nodeSel, "overlay"))))); err != nil || !clean {
		t.Errorf("only the detect node should carry the error (%v)", err)
	}
	screenshot(t, tab, "designer-error")
	if _, after, _ := ts.do("GET", "/api/v1/pipelines/faces3", "", nil); string(after) != string(body) {
		t.Errorf("a rejected save changed the stored pipeline:\n%s\n%s", body, after)
	}

	// Try it on messi5.jpg with the cascade back to its default.
	retype(t, tab, `[data-param="cascade"]`, "\b")
	waitJS(t, tab, `document.querySelector('[data-param="cascade"]').value === ''`, 10*time.Second)
	if err := chromedp.Do(tab, chromedp.SetUploadFiles(`[data-testid="try-file"]`, []string{messiPath})); err != nil {
		t.Fatal(err)
	}
	clickAt(t, tab, centerOf(t, tab, `[data-testid="try-run"]`))
	outputs := `Array.from(document.querySelectorAll('[data-testid="step-output"]'))`
	waitJS(t, tab, outputs+`.length === 3 && Array.from(document.querySelectorAll('[data-testid="step-output-image"]')).every((i) => i.complete && i.naturalWidth === 400)`, 60*time.Second)
	type shownStep struct {
		Step string  `json:"step"`
		MS   float64 `json:"ms"`
		Dets int     `json:"dets"`
	}
	shown, err := chromedp.Run(tab, chromedp.Evaluate[[]shownStep](outputs+`.map((o) => ({step: o.closest('[data-testid="step-node"]').dataset.step, ms: Number(o.dataset.ms), dets: Number(o.dataset.detections)}))`))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shown {
		t.Logf("try it: step %s %.2f ms, %d boxes", s.Step, s.MS, s.Dets)
		if s.MS <= 0 {
			t.Errorf("step %s shows no time", s.Step)
		}
		if s.Step == "detect" && s.Dets == 0 {
			t.Errorf("the face step found no face on messi5.jpg")
		}
	}
	screenshot(t, tab, "tryit")

	// Keyboard delete removes the selected step and its edge; Ctrl+Z brings
	// both back; the JSON view shows the pipeline and applies it unchanged.
	counts := `window.__ifc.nodes + '/' + window.__ifc.edges`
	clickAt(t, tab, centerOf(t, tab, fmt.Sprintf(nodeSel+` .step-title`, "overlay")))
	if err := chromedp.Do(tab, chromedp.KeyEvent(kb.Delete)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, counts+` === '2/1'`, 10*time.Second)
	clickAt(t, tab, centerOf(t, tab, `.react-flow__pane`))
	if err := chromedp.Do(tab, chromedp.KeyEvent("z", chromedp.KeyModifiers(chromedp.ModifierCtrl))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, counts+` === '3/2'`, 10*time.Second)
	clickAt(t, tab, centerOf(t, tab, `[data-testid="designer-json"]`))
	waitJS(t, tab, `(() => { const p = JSON.parse(document.querySelector('[data-testid="designer-json-text"]').value); return p.id === 'faces3' && p.steps.length === 3 && p.steps[2].inputs[0] === 'detect'; })()`, 10*time.Second)
	clickAt(t, tab, centerOf(t, tab, `[data-testid="designer-json-apply"]`))
	waitJS(t, tab, counts+` === '3/2' && document.querySelectorAll('.react-flow__edge').length === 2`, 10*time.Second)
}
