// cv::imdecode behind a C call that catches OpenCV's C++ exceptions: gocv's
// IMDecode lets them escape, which aborts the process.
#ifndef IFC_IMDECODE_H
#define IFC_IMDECODE_H

#ifdef __cplusplus
extern "C" {
#endif

// ifc_imdecode decodes len bytes at buf into dst (a cv::Mat*) with imread
// flags. Returns NULL on success, else a malloc'd message the caller frees.
char* ifc_imdecode(const unsigned char* buf, int len, int flags, void* dst);

#ifdef __cplusplus
}
#endif

#endif
