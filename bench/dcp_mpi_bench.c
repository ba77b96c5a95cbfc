/*
 dcp_mpi_bench.c - bench/run's dcp_save_vs_write row: `mpirun -np N dcp_mpi_bench SRC DIR`.
 Every rank loads SRC (a flat state dict, mapped; untimed), holds its Shard(0) piece of every
 tensor (torch.chunk's split, as DTensor places it; views, no copy), and after a barrier rank 0
 times sdict_mpi_save_dcp of the whole collective save (planning, every rank's file written and
 fsynced, .metadata). Prints "ms=..." from rank 0.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statedict.h"
#include "statedict_mpi.h"

static void die(const char *what, const sdict_error *err) {
    char b[512];
    fprintf(stderr, "dcp_mpi_bench: %s: %s\n", what, sdict_error_format(err, b, sizeof b));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (argc != 3) {
        fprintf(stderr, "usage: dcp_mpi_bench SRC DIR\n");
        MPI_Finalize();
        return 2;
    }
    sdict_error err;
    sdict_doc *src = NULL, *doc = NULL;
    if (sdict_load(argv[1], NULL, &src, &err) != SDICT_OK)
        die("load", &err);
    if (sdict_doc_new(&doc, &err) != SDICT_OK)
        die("doc", &err);
    const sdict_value *in = sdict_doc_root(src);
    size_t n = sdict_dict_len(in);
    sdict_value *root = sdict_dict_new(doc, false);
    sdict_dcp_shard *sh = calloc(n + 1, sizeof *sh);
    int64_t *dims = calloc(2 * 64 * (n + 1), sizeof *dims);
    int64_t shape[64];
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        const sdict_value *k = sdict_dict_key(in, i), *v = sdict_dict_val(in, i);
        const sdict_tensor *t = sdict_value_tensor(v);
        size_t kl;
        const char *key = sdict_str_get(k, &kl);
        if (!key || !t || t->ndim < 1 || t->ndim > 64)
            continue; /* the bench model is a flat dict of tensors */
        int64_t *goff = dims + 2 * 64 * ns, *gshape = goff + 64;
        int64_t rows = t->shape[0], step = (rows + world - 1) / world;
        int64_t start = (int64_t)rank * step < rows ? (int64_t)rank * step : rows;
        int64_t len = rows - start < step ? rows - start : step;
        sdict_tensor view = *t;
        memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
        memcpy(gshape, t->shape, (size_t)t->ndim * sizeof *gshape);
        memset(goff, 0, 64 * sizeof *goff);
        goff[0] = start;
        shape[0] = len;
        view.shape = shape;
        view.storage_offset += start * t->stride[0];
        sdict_value *tv = NULL;
        if (sdict_tensor_new(doc, &view, &tv, &err) != SDICT_OK ||
            sdict_dict_set_str(root, key, tv) != SDICT_OK)
            die("view", &err);
        sh[ns++] = (sdict_dcp_shard){key, gshape, goff};
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    if (sdict_mpi_save_dcp(MPI_COMM_WORLD, argv[2], root, sh, ns, 0, &err) != SDICT_OK)
        die("save", &err);
    double t1 = MPI_Wtime();
    if (rank == 0)
        printf("mpi-save ms=%.3f ranks=%d tensors=%zu\n", (t1 - t0) * 1e3, world, ns);
    free(sh);
    free(dims);
    sdict_doc_free(doc);
    sdict_doc_free(src);
    MPI_Finalize();
    return 0;
}
