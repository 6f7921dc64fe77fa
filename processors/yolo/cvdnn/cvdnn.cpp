// A thin C layer over OpenCV DNN that turns every C++ exception into an error
// string: gocv lets them escape, which aborts the whole process on a bad model
// or a mis-shaped input.
#include "cvdnn.h"
#include <opencv2/dnn.hpp>
#include <opencv2/core.hpp>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
struct Net {
  cv::dnn::Net net;
  // inputs[i] is the i-th input set since the last forward; its memory is
  // reused frame after frame (copyTo keeps a buffer of the same size).
  std::vector<cv::Mat> inputs;
  size_t next = 0;
  std::vector<cv::Mat> outputs;
};

char *dup(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}
}  // namespace

extern "C" {

char *cvdnn_load(const char *buf, size_t len, CvdnnNet *out) {
  try {
    Net *n = new Net();
    n->net = cv::dnn::readNetFromONNX(buf, len);
    if (n->net.empty()) {
      delete n;
      return dup("OpenCV read an empty network");
    }
    n->net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    n->net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    *out = n;
    return nullptr;
  } catch (const std::exception &e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown OpenCV error");
  }
}

char *cvdnn_set_input(CvdnnNet p, const char *name, const float *data, const int *dims, int ndims) {
  Net *n = static_cast<Net *>(p);
  try {
    // Copy into a Mat this side owns: OpenCV keeps a reference to its input
    // after the call, and the caller's memory may move on.
    cv::Mat wrap(ndims, dims, CV_32F, const_cast<float *>(data));
    if (n->next >= n->inputs.size()) n->inputs.resize(n->next + 1);
    cv::Mat &dst = n->inputs[n->next++];
    wrap.copyTo(dst);
    n->net.setInput(dst, name);
    return nullptr;
  } catch (const std::exception &e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown OpenCV error");
  }
}

char *cvdnn_forward(CvdnnNet p, const char **names, int count) {
  Net *n = static_cast<Net *>(p);
  try {
    if (count == 0) {
      n->outputs.resize(1);
      n->outputs[0] = n->net.forward();
    } else {
      std::vector<cv::String> outNames;
      for (int i = 0; i < count; i++) outNames.push_back(names[i]);
      n->net.forward(n->outputs, outNames);
    }
    n->next = 0;
    return nullptr;
  } catch (const std::exception &e) {
    n->next = 0;
    return dup(e.what());
  } catch (...) {
    n->next = 0;
    return dup("unknown OpenCV error");
  }
}

int cvdnn_out_count(CvdnnNet p) { return static_cast<int>(static_cast<Net *>(p)->outputs.size()); }

int cvdnn_out_dims(CvdnnNet p, int i, int *dims, int max) {
  const cv::Mat &m = static_cast<Net *>(p)->outputs[i];
  int d = m.dims;
  for (int k = 0; k < d && k < max; k++) dims[k] = m.size[k];
  return d;
}

const float *cvdnn_out_data(CvdnnNet p, int i, size_t *n) {
  cv::Mat &m = static_cast<Net *>(p)->outputs[i];
  if (m.type() != CV_32F || !m.isContinuous()) {
    *n = 0;
    return nullptr;
  }
  *n = m.total();
  return m.ptr<float>();
}

// cvdnn_out_names sets *names to the network's output names (its
// unconnected layers), one a line, for the caller to free.
char *cvdnn_out_names(CvdnnNet p, char **names) {
  try {
    std::string all;
    for (const auto &name : static_cast<Net *>(p)->net.getUnconnectedOutLayersNames()) {
      if (!all.empty()) all += '\n';
      all += name;
    }
    *names = dup(all);
    return nullptr;
  } catch (const std::exception &e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown OpenCV error");
  }
}

void cvdnn_free(CvdnnNet p) { delete static_cast<Net *>(p); }
}
