#include <opencv2/dnn.hpp>
#include <string>
#include <vector>
#include <opencv2/core/persistence.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/objdetect.hpp>
#include "objdetect.h"

int ifc_cv_set_threads(int n) {
    try {
        // cv::setNumThreads takes -1 for its default; 0 would mean serial.
        cv::setNumThreads(n > 0 ? n : -1);
        return cv::getNumThreads();
    } catch (...) {
        return -1;
    }
}

int ifc_cv_get_threads(void) {
    try {
        return cv::getNumThreads();
    } catch (...) {
        return -1;
    }
}

void* ifc_hog_new(void) {
    try {
        cv::HOGDescriptor* h = new cv::HOGDescriptor();
        h->setSVMDetector(cv::HOGDescriptor::getDefaultPeopleDetector());
        return h;
    } catch (...) {
        return nullptr;
    }
}

void ifc_hog_close(void* hog) { delete static_cast<cv::HOGDescriptor*>(hog); }

int ifc_hog_detect(void* hog, void* img, double hit_threshold, int win_stride,
                   int padding, double scale, int levels, int group_threshold,
                   float min_score, float nms_threshold, int* boxes,
                   float* scores, int max) {
    // Kept per thread so a steady stream reuses the vectors' storage.
    thread_local std::vector<cv::Rect> found;
    thread_local std::vector<double> weights;
    thread_local std::vector<float> fweights;
    thread_local std::vector<int> keep;
    try {
        found.clear();
        weights.clear();
        cv::HOGDescriptor* h = static_cast<cv::HOGDescriptor*>(hog);
        // HOGDescriptor's own default: as many levels as the picture allows.
        h->nlevels = levels > 0 ? levels : cv::HOGDescriptor::DEFAULT_NLEVELS;
        h->detectMultiScale(
            *static_cast<cv::Mat*>(img), found, weights, hit_threshold,
            cv::Size(win_stride, win_stride), cv::Size(padding, padding), scale,
            (double)group_threshold, false);
        fweights.assign(weights.begin(), weights.end());
        if (fweights.size() != found.size()) fweights.resize(found.size(), 0.f);
        keep.clear();
        cv::dnn::NMSBoxes(found, fweights, min_score, nms_threshold, keep);
    } catch (...) {
        return -1;
    }
    int n = 0;
    for (size_t i = 0; i < keep.size() && n < max; ++i) {
        const cv::Rect& r = found[keep[i]];
        boxes[4 * n] = r.x;
        boxes[4 * n + 1] = r.y;
        boxes[4 * n + 2] = r.width;
        boxes[4 * n + 3] = r.height;
        scores[n] = fweights[keep[i]];
        ++n;
    }
    return n;
}

void* ifc_cascade_new(const char* xml, int len) {
    cv::CascadeClassifier* c = nullptr;
    try {
        cv::FileStorage fs(std::string(xml, len), cv::FileStorage::READ | cv::FileStorage::MEMORY);
        if (!fs.isOpened()) return nullptr;
        c = new cv::CascadeClassifier();
        if (c->read(fs.getFirstTopLevelNode()) && !c->empty()) return c;
    } catch (...) {
    }
    delete c;
    return nullptr;
}

void ifc_cascade_close(void* cascade) { delete static_cast<cv::CascadeClassifier*>(cascade); }

int ifc_cascade_detect(void* cascade, void* gray, double scale_factor,
                       int min_neighbors, int min_size, int* boxes,
                       int* neighbors, int max) {
    thread_local std::vector<cv::Rect> found;
    thread_local std::vector<int> counts;
    try {
        found.clear();
        counts.clear();
        static_cast<cv::CascadeClassifier*>(cascade)->detectMultiScale(
            *static_cast<cv::Mat*>(gray), found, counts, scale_factor, min_neighbors, 0,
            cv::Size(min_size, min_size));
    } catch (...) {
        return -1;
    }
    int n = 0;
    for (size_t i = 0; i < found.size() && n < max; ++i) {
        const cv::Rect& r = found[i];
        boxes[4 * n] = r.x;
        boxes[4 * n + 1] = r.y;
        boxes[4 * n + 2] = r.width;
        boxes[4 * n + 3] = r.height;
        neighbors[n] = i < counts.size() ? counts[i] : 0;
        ++n;
    }
    return n;
}
