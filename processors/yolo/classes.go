package yolo

import (
	"bufio"
	"fmt"
	"os"
	"strings"
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

// ParseClasses turns the classes parameter into names: empty means COCO80; a
// value without a comma that names an existing file is read one name a line
// (blank lines skipped); anything else is a comma-separated list.
func ParseClasses(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return COCO80, nil
	}
	if !strings.Contains(v, ",") {
		if st, err := os.Stat(v); err == nil && !st.IsDir() {
			return readClassFile(v)
		}
	}
	parts := strings.Split(v, ",")
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		out = append(out, strings.TrimSpace(p))
	}
	return out, nil
}

func readClassFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("yolo: classes: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("yolo: classes %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("yolo: classes file %s is empty", path)
	}
	return out, nil
}
