#include <stdlib.h>
#include <string.h>
#include <exception>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include "imdecode.h"

static char* copy_message(const char* s) {
    size_t n = strlen(s);
    char* out = static_cast<char*>(malloc(n + 1));
    if (out != nullptr) memcpy(out, s, n + 1);
    return out;
}

char* ifc_imdecode(const unsigned char* buf, int len, int flags, void* dst) {
    try {
        // Wraps the caller's bytes without copying them.
        cv::Mat in(1, len, CV_8UC1, const_cast<unsigned char*>(buf));
        cv::Mat* out = static_cast<cv::Mat*>(dst);
        cv::imdecode(in, flags, out);
        if (out->empty()) return copy_message("the decoder refused the data");
        return nullptr;
    } catch (const cv::Exception& e) {
        return copy_message(e.err.c_str());
    } catch (const std::exception& e) {
        return copy_message(e.what());
    } catch (...) {
        return copy_message("unknown exception");
    }
}
