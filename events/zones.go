package events

import (
	"fmt"
	"slices"
	"time"
)

// Zone is a polygon on a camera's picture that events are tied to.
type Zone struct {
	// Name is how events list the zone.
	Name string `json:"name"`
	// Points are the polygon's corners as fractions of the frame's width and
	// height (0..1), so a zone survives a change of the detection size.
	Points [][2]float32 `json:"points"`
	// Labels the zone cares about; empty means every label.
	Labels []string `json:"labels,omitempty"`
	// MinDwell is how long an object must stay inside before it counts.
	MinDwell time.Duration `json:"min_dwell,omitempty"`
}

// Validate checks a zone as the camera configuration takes it.
func (z *Zone) Validate() error {
	if z.Name == "" || len(z.Name) > 64 {
		return fmt.Errorf("zone name %q: want 1 to 64 characters", z.Name)
	}
	if len(z.Points) < 3 || len(z.Points) > 64 {
		return fmt.Errorf("zone %q: %d points, want 3 to 64", z.Name, len(z.Points))
	}
	for i, p := range z.Points {
		if !(p[0] >= 0 && p[0] <= 1 && p[1] >= 0 && p[1] <= 1) {
			return fmt.Errorf("zone %q: point %d (%v, %v) outside 0..1", z.Name, i, p[0], p[1])
		}
	}
	if z.MinDwell < 0 {
		return fmt.Errorf("zone %q: negative min_dwell", z.Name)
	}
	return nil
}

// Wants reports whether the zone cares about label.
func (z *Zone) Wants(label string) bool {
	return len(z.Labels) == 0 || slices.Contains(z.Labels, label)
}

// Contains reports whether the point (fractions of the frame) is inside the
// polygon, by counting the edges a ray to the right crosses.
func (z *Zone) Contains(x, y float32) bool {
	in := false
	n := len(z.Points)
	for i, j := 0, n-1; i < n; j, i = i, i+1 {
		a, b := z.Points[i], z.Points[j]
		if (a[1] > y) != (b[1] > y) && x < (b[0]-a[0])*(y-a[1])/(b[1]-a[1])+a[0] {
			in = !in
		}
	}
	return in
}
