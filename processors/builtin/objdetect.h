// Object detection wrappers. gocv's HOGDescriptor drops the SVM weights,
// which min_score and NMS need, and its CascadeClassifier lets an OpenCV
// exception (a file that is not a cascade) abort the process.
#ifndef IFC_OBJDETECT_H
#define IFC_OBJDETECT_H

#ifdef __cplusplus
extern "C" {
#endif

// ifc_cv_set_threads sets the threads of OpenCV's parallel loops for the
// whole process (0: OpenCV's default, one per core) and returns the count
// now in force, or -1 when OpenCV threw.
int ifc_cv_set_threads(int n);
int ifc_cv_get_threads(void);

void* ifc_hog_new(void);
void ifc_hog_close(void* hog);

// ifc_hog_detect runs the default people detector on img (a cv::Mat*) and
// writes up to max boxes (x, y, w, h quadruples) and scores after grouping,
// min_score and NMS. levels bounds the pyramid levels searched (the first
// is img's own size); 0 searches down to the window's size. Returns the
// number written, or -1 when OpenCV threw.
int ifc_hog_detect(void* hog, void* img, double hit_threshold, int win_stride,
                   int padding, double scale, int levels, int group_threshold,
                   float min_score, float nms_threshold, int* boxes,
                   float* scores, int max);

// ifc_cascade_new loads a cascade from the len bytes of XML at xml (the
// caller reads the file, so it decides which files may be read); NULL when
// it cannot.
void* ifc_cascade_new(const char* xml, int len);
void ifc_cascade_close(void* cascade);

// ifc_cascade_detect runs the cascade on gray (a cv::Mat*, 8-bit single
// channel) and writes up to max boxes and their neighbour counts. Returns the
// number written, or -1 when OpenCV threw.
int ifc_cascade_detect(void* cascade, void* gray, double scale_factor,
                       int min_neighbors, int min_size, int* boxes,
                       int* neighbors, int max);

#ifdef __cplusplus
}
#endif

#endif
