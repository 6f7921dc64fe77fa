// HOG people detection with scores and non-maximum suppression. gocv's
// HOGDescriptor drops the SVM weights, which min_score and NMS need.
#ifndef IFC_HOG_H
#define IFC_HOG_H

#ifdef __cplusplus
extern "C" {
#endif

void* ifc_hog_new(void);
void ifc_hog_close(void* hog);

// ifc_hog_detect runs the default people detector on img (a cv::Mat*) and
// writes up to max boxes (x, y, w, h quadruples) and scores after grouping,
// min_score and NMS. Returns the number written, or -1 when OpenCV threw.
int ifc_hog_detect(void* hog, void* img, double hit_threshold, int win_stride,
                   int padding, double scale, int group_threshold,
                   float min_score, float nms_threshold, int* boxes,
                   float* scores, int max);

#ifdef __cplusplus
}
#endif

#endif
