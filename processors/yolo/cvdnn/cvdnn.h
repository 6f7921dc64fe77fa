#ifndef IMAGEFLOW_CVDNN_H
#define IMAGEFLOW_CVDNN_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef void *CvdnnNet;

// Every function returning char* returns NULL on success or an error message
// the caller frees with free().
char *cvdnn_load(const char *buf, size_t len, CvdnnNet *out);
char *cvdnn_set_input(CvdnnNet net, const char *name, const float *data, const int *dims, int ndims);
char *cvdnn_forward(CvdnnNet net, const char **names, int n);
int cvdnn_out_count(CvdnnNet net);
int cvdnn_out_dims(CvdnnNet net, int i, int *dims, int max);
const float *cvdnn_out_data(CvdnnNet net, int i, size_t *n);
char *cvdnn_out_names(CvdnnNet net, char **names);
void cvdnn_free(CvdnnNet net);

#ifdef __cplusplus
}
#endif
#endif
