package processors

// IoU is the intersection over union of two boxes, each given by its
// top-left corner and size; 0 when they do not overlap. Every non-maximum
// suppression of the detectors measures overlap with it.
func IoU(ax, ay, aw, ah, bx, by, bw, bh float32) float32 {
	ix := min(ax+aw, bx+bw) - max(ax, bx)
	iy := min(ay+ah, by+bh) - max(ay, by)
	if ix <= 0 || iy <= 0 {
		return 0
	}
	in := ix * iy
	return in / (aw*ah + bw*bh - in)
}
