package usb

/*
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/videodev2.h>

// ifc_querycap fills cap; returns 0 or errno.
static int ifc_querycap(int fd, struct v4l2_capability *cap) {
	memset(cap, 0, sizeof(*cap));
	return ioctl(fd, VIDIOC_QUERYCAP, cap) < 0 ? errno : 0;
}

// ifc_enum_fmt fills the index-th capture format; returns 0 or errno (EINVAL
// past the last one).
static int ifc_enum_fmt(int fd, int index, struct v4l2_fmtdesc *f) {
	memset(f, 0, sizeof(*f));
	f->index = index;
	f->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	return ioctl(fd, VIDIOC_ENUM_FMT, f) < 0 ? errno : 0;
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"unsafe"
)

// Device is one V4L2 video capture device.
type Device struct {
	// Path is the device node, /dev/videoN.
	Path string `json:"path"`
	// Name is the card name the driver reports ("HD Webcam C615").
	Name    string `json:"name"`
	Driver  string `json:"driver"`
	BusInfo string `json:"bus_info"`
	// Formats are the pixel formats the device captures.
	Formats []Format `json:"formats"`
}

// Format is one capture pixel format of a device.
type Format struct {
	// FourCC is the V4L2 code ("MJPG", "YUYV", "H264").
	FourCC      string `json:"fourcc"`
	Description string `json:"description"`
	Compressed  bool   `json:"compressed"`
}

// devGlob is where ListDevices looks; tests point it elsewhere.
var devGlob = "/dev/video*"

// ListDevices lists the video capture devices and their formats. Nodes that
// cannot capture video (metadata nodes of UVC cameras) or cannot be opened
// are left out; no device gives an empty list, not an error.
func ListDevices() ([]Device, error) {
	paths, err := filepath.Glob(devGlob)
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	devs := []Device{}
	for _, p := range paths {
		d, ok := queryDevice(p)
		if ok {
			devs = append(devs, d)
		}
	}
	return devs, nil
}

func queryDevice(path string) (Device, bool) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return Device{}, false
	}
	defer f.Close()
	fd := C.int(f.Fd())
	var cp C.struct_v4l2_capability
	if C.ifc_querycap(fd, &cp) != 0 {
		return Device{}, false
	}
	caps := uint32(cp.capabilities)
	if caps&C.V4L2_CAP_DEVICE_CAPS != 0 {
		caps = uint32(cp.device_caps)
	}
	if caps&C.V4L2_CAP_VIDEO_CAPTURE == 0 {
		return Device{}, false
	}
	d := Device{
		Path:    path,
		Name:    cstr(unsafe.Pointer(&cp.card[0]), len(cp.card)),
		Driver:  cstr(unsafe.Pointer(&cp.driver[0]), len(cp.driver)),
		BusInfo: cstr(unsafe.Pointer(&cp.bus_info[0]), len(cp.bus_info)),
	}
	for i := 0; i < 64; i++ {
		var fd2 C.struct_v4l2_fmtdesc
		if C.ifc_enum_fmt(fd, C.int(i), &fd2) != 0 {
			break
		}
		d.Formats = append(d.Formats, Format{
			FourCC:      FourCC(uint32(fd2.pixelformat)),
			Description: cstr(unsafe.Pointer(&fd2.description[0]), len(fd2.description)),
			Compressed:  fd2.flags&C.V4L2_FMT_FLAG_COMPRESSED != 0,
		})
	}
	return d, true
}

// cstr reads a NUL-terminated fixed-size C array.
func cstr(p unsafe.Pointer, n int) string {
	b := unsafe.Slice((*byte)(p), n)
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// FourCC spells a V4L2 pixel format code.
func FourCC(v uint32) string {
	b := []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("0x%08x", v)
		}
	}
	return string(b)
}

// inputFormat maps a FourCC to libavdevice's v4l2 input_format name.
func inputFormat(fourcc string) string {
	switch fourcc {
	case "MJPG", "JPEG":
		return "mjpeg"
	case "YUYV":
		return "yuyv422"
	case "H264":
		return "h264"
	case "NV12":
		return "nv12"
	case "YU12":
		return "yuv420p"
	}
	return ""
}
