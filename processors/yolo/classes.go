package yolo

import (
	"fmt"
	"path"
	"strings"

	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
)

// COCO80 are the class names of the 80-class COCO models that YOLOv5/v8 ship
// with, in their output order. (OpenCV's object_detection_classes_coco.txt has
// the 90-id list with gaps, which does not match YOLO outputs.)
var COCO80 = []string{
	"person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
	"traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
	"dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
	"umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
	"kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
	"bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
	"sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
	"couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
	"remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
	"refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
	"toothbrush",
}

// ParseClasses turns the classes parameter into names: empty means COCO80;
// a value without a comma that looks like a file name (it has a slash, or
// ends in .txt, .names or .labels) is a file of one name a line (blank
// lines skipped) read through files, so only inside models_dir; anything
// else is a comma-separated list (one name without a comma is a list of
// one).
func ParseClasses(v string, files *modelfiles.Dir) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return COCO80, nil
	}
	if !strings.Contains(v, ",") && isFileName(v) {
		return readClassFile(v, files)
	}
	parts := strings.Split(v, ",")
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		out = append(out, strings.TrimSpace(p))
	}
	return out, nil
}

func isFileName(v string) bool {
	if strings.ContainsRune(v, '/') {
		return true
	}
	switch strings.ToLower(path.Ext(v)) {
	case ".txt", ".names", ".labels":
		return true
	}
	return false
}

func readClassFile(name string, files *modelfiles.Dir) ([]string, error) {
	b, err := files.ReadFile(name, modelfiles.MaxClassesBytes)
	if err != nil {
		return nil, fmt.Errorf("yolo: classes: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if s := strings.TrimSpace(line); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("yolo: classes file %q is empty", name)
	}
	return out, nil
}
