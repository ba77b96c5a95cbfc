/* fuzz_dcp_metadata.c - the distributed-checkpoint .metadata reader (dcp_read.c): the pickle
   machine in inert mode, the allow-list of DCP's classes, every dataclass field, the chunk
   geometry and the planner_data nesting, without any .distcp item. */
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sdict_error err;
    (void)sdict__dcp_metadata_check(data, size, &err);
    return 0;
}
