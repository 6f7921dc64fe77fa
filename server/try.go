package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"time"

	"github.com/gofiber/fiber/v2"
	"gocv.io/x/gocv"
	"google.golang.org/protobuf/proto"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/media/imagedecode"
	"github.com/imageflowcanvas/imageflow/processors"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// tryBodyLimit caps a try request: one picture and a pipeline.
const tryBodyLimit = 32 << 20

// tryTimeout bounds one try run (a slow remote step must not hold the request forever).
const tryTimeout = 60 * time.Second

// tryFrameWait bounds the wait for a camera's next frame.
const tryFrameWait = 5 * time.Second

// tryMaxSide bounds the side of the pictures a try answer carries; larger
// step outputs are shrunk (boxes are drawn before, so they stay in place).
const tryMaxSide = 1280

// tryStep is one step's outcome in a try answer.
type tryStep struct {
	ID        string            `json:"id"`
	Processor string            `json:"processor"`
	MS        float64           `json:"ms"`
	Image     string            `json:"image,omitempty"`
	Width     int               `json:"width,omitempty"`
	Height    int               `json:"height,omitempty"`
	Detection []tryDetection    `json:"detections"`
	Values    map[string]string `json:"values,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// tryDetection is a detection in source pixels.
type tryDetection struct {
	Label string  `json:"label"`
	Score float32 `json:"score"`
	X     float32 `json:"x"`
	Y     float32 `json:"y"`
	W     float32 `json:"w"`
	H     float32 `json:"h"`
}

// tryResult answers POST /api/v1/pipelines/try.
type tryResult struct {
	Pipeline string    `json:"pipeline"`
	Width    int       `json:"width"`
	Height   int       `json:"height"`
	MS       float64   `json:"ms"`
	Steps    []tryStep `json:"steps"`
}

func trySchemas() map[string]any {
	det := obj(map[string]any{"label": str, "score": num, "x": num, "y": num, "w": num, "h": num}, "label", "score", "x", "y", "w", "h")
	step := obj(map[string]any{"id": str, "processor": str, "ms": num,
		"image": map[string]any{"type": "string", "description": "The step's output picture as a data: URL (JPEG), boxes it passes on drawn in"},
		"width": integ, "height": integ, "detections": arr(det),
		"values": map[string]any{"type": "object", "additionalProperties": str},
		"error":  str}, "id", "processor", "ms", "detections")
	upload := obj(map[string]any{
		"image":       map[string]any{"type": "string", "format": "binary", "description": "The picture to run the pipeline on (JPEG, PNG, ...); or give camera"},
		"camera":      map[string]any{"type": "string", "description": "Run on this camera's next live frame instead of an uploaded picture (the camera must be online with a pipeline)"},
		"pipeline":    map[string]any{"type": "string", "description": "A pipeline as JSON (PipelineInput), run without being stored"},
		"pipeline_id": map[string]any{"type": "string", "description": "A stored pipeline's id, when pipeline is not given"},
	})
	return map[string]any{
		"TryUpload": upload,
		"TryResult": obj(map[string]any{"pipeline": str, "width": integ, "height": integ, "ms": num, "steps": arr(step)}, "pipeline", "width", "height", "ms", "steps"),
	}
}

// tryPipeline runs an inline or stored pipeline once on an uploaded picture
// (or a camera's next live frame)
// and answers every step's output picture (boxes drawn), detections and time.
// Nothing is stored.
func (s *Server) tryPipeline(c *fiber.Ctx) error {
	form, err := readTryForm(c)
	if err != nil {
		return writeError(c, err)
	}
	defer form.RemoveAll()
	p, err := s.tryPipelineSpec(c.UserContext(), form)
	if err != nil {
		return writeError(c, err)
	}
	img, err := s.tryPicture(c.UserContext(), form)
	if err != nil {
		return writeError(c, err)
	}
	defer img.Close()

	res := tryResult{Pipeline: p.Id, Width: img.Cols(), Height: img.Rows(), Steps: make([]tryStep, 0, len(p.Steps))}
	var drawErr error
	inspect := func(o processors.StepOutput) {
		st := tryStep{ID: o.ID, Processor: o.Processor, MS: float64(o.Duration.Microseconds()) / 1000, Detection: []tryDetection{}, Values: o.Values}
		if o.Err != nil {
			st.Error = o.Err.Error()
		}
		for _, d := range o.Detections {
			st.Detection = append(st.Detection, tryDetection{Label: d.Label, Score: d.Score, X: d.X, Y: d.Y, W: d.W, H: d.H})
		}
		if o.Image.Ptr() != nil && !o.Image.Empty() {
			var derr error
			st.Image, st.Width, st.Height, derr = drawTryImage(o.Image, o.Detections, o.Width, o.Height)
			if derr != nil && drawErr == nil {
				drawErr = fmt.Errorf("step %q picture: %w", o.ID, derr)
			}
		}
		if len(st.Values) > 0 {
			st.Values = maps.Clone(st.Values) // the engine reuses its map
		}
		res.Steps = append(res.Steps, st)
	}
	pl, err := processors.Compile(s.Registry, p, processors.WithRemote(s.remoteFactory), processors.WithInspect(inspect))
	if err != nil {
		return writeError(c, err)
	}
	defer pl.Close()
	ctx, cancel := context.WithTimeout(c.UserContext(), tryTimeout)
	defer cancel()
	start := time.Now()
	// A failing step is reported on its step (and its consumers'); the
	// answer is still the run's picture of every step.
	_, _ = pl.Run(ctx, img)
	res.MS = float64(time.Since(start).Microseconds()) / 1000
	if drawErr != nil {
		return writeError(c, drawErr)
	}
	return c.JSON(res)
}

func readTryForm(c *fiber.Ctx) (*multipart.Form, error) {
	mt, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != fiber.MIMEMultipartForm || params["boundary"] == "" {
		return nil, invalidf("want multipart/form-data with an image and a pipeline or pipeline_id")
	}
	form, err := multipart.NewReader(bytes.NewReader(c.Body()), params["boundary"]).ReadForm(tryBodyLimit)
	if err != nil {
		return nil, invalidf("malformed multipart body: %v", err)
	}
	return form, nil
}

func (s *Server) tryPipelineSpec(ctx context.Context, form *multipart.Form) (*busv1.Pipeline, error) {
	inline, stored := formValue(form, "pipeline"), formValue(form, "pipeline_id")
	switch {
	case inline != "" && stored != "":
		return nil, invalidf("give pipeline or pipeline_id, not both")
	case inline != "":
		return s.decodePipeline([]byte(inline), "")
	case stored != "":
		if err := bus.ValidateToken(stored); err != nil {
			return nil, invalidf("pipeline_id %q: %v", stored, err)
		}
		p, _, err := s.pipelines.get(ctx, stored)
		return p, err
	}
	return nil, invalidf("missing pipeline (JSON) or pipeline_id")
}

func formValue(form *multipart.Form, name string) string {
	if v := form.Value[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// tryPicture is the uploaded picture, or the next frame the named camera's
// live pipeline gets.
func (s *Server) tryPicture(ctx context.Context, form *multipart.Form) (gocv.Mat, error) {
	cam := formValue(form, "camera")
	if cam == "" {
		data, err := tryImage(form)
		if err != nil {
			return gocv.Mat{}, err
		}
		img, _, err := imagedecode.Decode(data, imagedecode.Options{})
		if err != nil {
			return gocv.Mat{}, invalidf("image: %v", err)
		}
		return img, nil
	}
	if len(form.File["image"]) > 0 {
		return gocv.Mat{}, invalidf("give an image or a camera, not both")
	}
	if err := bus.ValidateToken(cam); err != nil {
		return gocv.Mat{}, invalidf("camera %q: %v", cam, err)
	}
	if _, _, err := s.cameras.get(ctx, cam); err != nil {
		return gocv.Mat{}, err
	}
	sub, err := s.bus.Conn().SubscribeSync(s.bus.Subjects().Frames(cam))
	if err != nil {
		return gocv.Mat{}, err
	}
	defer sub.Unsubscribe()
	wait, cancel := context.WithTimeout(ctx, tryFrameWait)
	defer cancel()
	msg, err := sub.NextMsgWithContext(wait)
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("%w: camera %q sent no frame within %s (frames flow while it is online with a pipeline)", ErrConflict, cam, tryFrameWait)
	}
	f := &busv1.Frame{}
	if err := proto.Unmarshal(msg.Data, f); err != nil {
		return gocv.Mat{}, fmt.Errorf("camera %q frame: %w", cam, err)
	}
	return processors.FrameMat(f)
}

func tryImage(form *multipart.Form) ([]byte, error) {
	files := form.File["image"]
	if len(files) != 1 {
		return nil, invalidf("want exactly one file in the image field, got %d", len(files))
	}
	f, err := files[0].Open()
	if err != nil {
		return nil, invalidf("image: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, tryBodyLimit+1))
	if err != nil {
		return nil, invalidf("image: %v", err)
	}
	if len(data) == 0 {
		return nil, invalidf("image: empty file")
	}
	return data, nil
}

var tryBoxColor = color.RGBA{R: 0, G: 230, B: 64, A: 0}

// drawTryImage encodes a step's picture as a JPEG data: URL with dets
// (source pixels of a srcW×srcH picture) drawn in, shrunk to tryMaxSide.
func drawTryImage(pic gocv.Mat, dets []*busv1.Detection, srcW, srcH int) (string, int, int, error) {
	canvas := gocv.NewMat()
	defer canvas.Close()
	switch pic.Channels() {
	case 1:
		gocv.CvtColor(pic, &canvas, gocv.ColorGrayToBGR)
	case 3:
		pic.CopyTo(&canvas)
	default:
		return "", 0, 0, errors.New("unsupported channel count")
	}
	w, h := canvas.Cols(), canvas.Rows()
	sx, sy := float32(w)/float32(max(srcW, 1)), float32(h)/float32(max(srcH, 1))
	thick := max(2, min(w, h)/200)
	for _, d := range dets {
		r := image.Rect(int(d.X*sx), int(d.Y*sy), int((d.X+d.W)*sx), int((d.Y+d.H)*sy))
		gocv.Rectangle(&canvas, r, tryBoxColor, thick)
	}
	if side := max(w, h); side > tryMaxSide {
		f := float64(tryMaxSide) / float64(side)
		gocv.Resize(canvas, &canvas, image.Point{}, f, f, gocv.InterpolationArea)
		w, h = canvas.Cols(), canvas.Rows()
	}
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, canvas)
	if err != nil {
		return "", 0, 0, err
	}
	defer buf.Close()
	return "data:image/jpeg;base64," + base64.StdEncoding.EncodeToString(buf.GetBytes()), w, h, nil
}

// tryRoute is the designer's "try it" endpoint.
func (s *Server) tryRoute() route {
	return route{Method: "POST", Path: "/api/v1/pipelines/try", Summary: "Run an inline or stored pipeline once on an uploaded picture: every step's output picture (boxes drawn), detections and time in ms; nothing is stored",
		Handler: s.tryPipeline, Request: "TryUpload", Response: "TryResult", Statuses: []int{200, 400, 404, 409, 413}, Role: rest.RoleOperator, BodyLimit: tryBodyLimit}
}
