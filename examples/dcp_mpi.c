/*
 dcp_mpi.c - a sharded model and its Adam state saved to and loaded from a torch.distributed
 checkpoint (DCP) folder by N MPI processes, with statedict_mpi.

   mpirun -np N dcp_mpi save DIR [--shard rows|cols] [--lowest-rank] [--fail-rank R]
   mpirun -np M dcp_mpi load DIR [--shard rows|cols] [--own-chunks]

 The state dict is {"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": 3,
 "tag": "mpi"} for a 2-layer MLP (nn.Linear(7, 10), nn.Linear(10, 5)) and torch.optim.Adam;
 flattened, as DCP names its entries:
   model.fc1.weight [10, 7]  model.fc1.bias [10]  model.fc2.weight [5, 10]  model.fc2.bias [5]
   optim.state.<i>.exp_avg / exp_avg_sq (the shape of parameter i), optim.state.<i>.step (0-dim)
   optim.param_groups [{lr, betas, eps, weight_decay, amsgrad, params}]   epoch   tag
 The Linear weights and their exp_avg / exp_avg_sq are sharded by rows (dim 0) or columns
 (dim 1) as DTensor's Shard(d) places them (torch.chunk: ceil(n / world) per rank, the last
 ranks' shards shorter or empty); biases, their state and step are replicated (every rank
 passes them whole; one rank writes each). Element i (row-major, of the global tensor) of the
 k-th tensor is k * 1000 + i / 4, so every rank can check what it loaded.

 load: every rank asks for its own slices under its own sharding (any rank count, either
 sharding, independent of the save) and checks each value; --own-chunks also checks that it
 read exactly one saved item per non-empty slice (the sharding and rank count of the save).
 --fail-rank R makes rank R's state dict name a shard of a tensor it does not hold, to show
 that a failing rank makes the whole save fail with no .metadata written.
 Exit status: 0 ok, 1 a check or the save/load failed, 2 usage.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statedict.h"
#include "statedict_mpi.h"

#define N_PARAMS 4
static const char *const PARAM[N_PARAMS] = {"model.fc1.weight", "model.fc1.bias",
                                            "model.fc2.weight", "model.fc2.bias"};
static const int64_t SHAPE[N_PARAMS][2] = {{10, 7}, {10, 0}, {5, 10}, {5, 0}};
static const int NDIM[N_PARAMS] = {2, 1, 2, 1};

/* One global tensor of the state dict: its fqn, id k (value formula) and parameter. */
typedef struct spec {
    char fqn[64];
    int k, param; /* param -1: the 0-dim step */
} spec;

static int specs(spec *s) {
    int n = 0;
    for (int p = 0; p < N_PARAMS; p++) {
        snprintf(s[n].fqn, sizeof s[n].fqn, "%s", PARAM[p]);
        s[n].param = p, s[n].k = n, n++;
    }
    for (int p = 0; p < N_PARAMS; p++) {
        snprintf(s[n].fqn, sizeof s[n].fqn, "optim.state.%d.exp_avg", p);
        s[n].param = p, s[n].k = n, n++;
        snprintf(s[n].fqn, sizeof s[n].fqn, "optim.state.%d.exp_avg_sq", p);
        s[n].param = p, s[n].k = n, n++;
        snprintf(s[n].fqn, sizeof s[n].fqn, "optim.state.%d.step", p);
        s[n].param = -1, s[n].k = n, n++;
    }
    return n;
}

/* Rank r's piece of a dimension of n elements over world ranks, as torch.chunk / Shard(d). */
static void piece(int64_t n, int rank, int world, int64_t *off, int64_t *len) {
    int64_t step = (n + world - 1) / world;
    *off = (int64_t)rank * step < n ? (int64_t)rank * step : n;
    *len = n - *off < step ? n - *off : step;
}

/* The region of spec s rank owns: sharded weights (and their states) by dim, others whole. */
static int region(const spec *s, int dim, int rank, int world, int64_t *off, int64_t *len,
                  int64_t *shape) {
    int nd = s->param < 0 ? 0 : NDIM[s->param];
    for (int d = 0; d < nd; d++) {
        shape[d] = SHAPE[s->param][d];
        off[d] = 0;
        len[d] = shape[d];
    }
    if (nd == 2)
        piece(shape[dim], rank, world, &off[dim], &len[dim]);
    return nd;
}

static float value_at(const spec *s, int nd, const int64_t *shape, const int64_t *idx) {
    if (s->param < 0)
        return 3.0f;
    int64_t i = 0;
    for (int d = 0; d < nd; d++)
        i = i * shape[d] + idx[d];
    return (float)s->k * 1000.0f + (float)i / 4.0f;
}

/* Fills (fill) or checks the contiguous region data of s; returns mismatches. */
static long walk(const spec *s, int nd, const int64_t *shape, const int64_t *off,
                 const int64_t *len, float *data, int fill) {
    int64_t n = 1, idx[2];
    for (int d = 0; d < nd; d++)
        n *= len[d];
    long bad = 0;
    for (int64_t e = 0; e < n; e++) {
        int64_t rest = e;
        for (int d = nd - 1; d >= 0; d--) {
            idx[d] = off[d] + rest % len[d];
            rest /= len[d];
        }
        float v = value_at(s, nd, shape, idx);
        if (fill)
            data[e] = v;
        else if (data[e] != v)
            bad++;
    }
    return bad;
}

static sdict_value *tensor_of(sdict_doc *doc, int nd, const int64_t *len) {
    sdict_storage *st = NULL;
    size_t n = 1;
    for (int d = 0; d < nd; d++)
        n *= (size_t)len[d];
    if (sdict_storage_new(n * sizeof(float), &st, NULL) != SDICT_OK)
        return NULL;
    sdict_tensor t;
    int64_t stride[2];
    sdict_value *v = NULL;
    if (sdict_tensor_init(&t, SDICT_FLOAT32, nd, len, stride, st, NULL) == SDICT_OK)
        sdict_tensor_new(doc, &t, &v, NULL);
    sdict_storage_release(st);
    return v;
}

/* Sets root[a][b]...: a dotted path, creating dicts. */
static int set_path(sdict_doc *doc, sdict_value *root, const char *fqn, sdict_value *v) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", fqn);
    sdict_value *d = root;
    for (char *part = buf;;) {
        /* a module state_dict's keys hold dots themselves: model -> {"fc1.weight": ...} */
        char *dot = d == root && !strncmp(part, "model.", 6) ? part + 5 : strchr(part, '.');
        if (d != root && d == sdict_dict_get(root, "model"))
            dot = NULL;
        if (!dot)
            return sdict_dict_set_str(d, part, v) == SDICT_OK ? 0 : -1;
        *dot = 0;
        sdict_value *child = sdict_dict_get(d, part);
        if (!child) {
            child = sdict_dict_new(doc, false);
            if (!child || sdict_dict_set_str(d, part, child) != SDICT_OK)
                return -1;
        }
        d = child;
        part = dot + 1;
    }
}

static sdict_value *param_groups(sdict_doc *doc) {
    sdict_value *l = sdict_list_new(doc), *g = sdict_dict_new(doc, false);
    sdict_value *betas = sdict_tuple_new(doc), *params = sdict_list_new(doc);
    sdict_seq_append(betas, sdict_float_new(doc, 0.9));
    sdict_seq_append(betas, sdict_float_new(doc, 0.999));
    for (int p = 0; p < N_PARAMS; p++)
        sdict_seq_append(params, sdict_int_new(doc, p));
    sdict_dict_set_str(g, "lr", sdict_float_new(doc, 0.001));
    sdict_dict_set_str(g, "betas", betas);
    sdict_dict_set_str(g, "eps", sdict_float_new(doc, 1e-8));
    sdict_dict_set_str(g, "weight_decay", sdict_float_new(doc, 0.0));
    sdict_dict_set_str(g, "amsgrad", sdict_bool_new(doc, false));
    sdict_dict_set_str(g, "params", params);
    sdict_seq_append(l, g);
    return l;
}

static int usage(void) {
    fprintf(stderr, "usage: dcp_mpi save DIR [--shard rows|cols] [--lowest-rank] [--fail-rank R]\n"
                    "       dcp_mpi load DIR [--shard rows|cols] [--own-chunks]\n");
    return 2;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (argc < 3 || (strcmp(argv[1], "save") && strcmp(argv[1], "load"))) {
        MPI_Finalize();
        return usage();
    }
    int save = !strcmp(argv[1], "save"), dim = 0, fail_rank = -1, own = 0;
    uint32_t flags = 0;
    const char *dir = argv[2];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--shard") && i + 1 < argc) {
            dim = !strcmp(argv[++i], "cols");
        } else if (!strcmp(argv[i], "--fail-rank") && i + 1 < argc) {
            fail_rank = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--lowest-rank")) {
            flags |= SDICT_DCP_DEDUP_LOWEST_RANK;
        } else if (!strcmp(argv[i], "--own-chunks")) {
            own = 1;
        } else {
            MPI_Finalize();
            return usage();
        }
    }
    spec s[3 * N_PARAMS + N_PARAMS];
    int ns = specs(s);
    sdict_doc *doc = NULL;
    sdict_doc_new(&doc, NULL);
    sdict_error err;
    memset(&err, 0, sizeof err);
    sdict_status st;
    long bad = 0;
    char line[320];
    if (save) {
        sdict_value *root = sdict_dict_new(doc, false);
        sdict_dcp_shard sh[3 * N_PARAMS + N_PARAMS + 1];
        static int64_t goff[16][2], gshape[16][2];
        size_t nsh = 0;
        for (int i = 0; i < ns; i++) {
            int64_t len[2];
            int nd = region(&s[i], dim, rank, world, goff[i], len, gshape[i]);
            sdict_value *t = tensor_of(doc, nd, len);
            if (!t || set_path(doc, root, s[i].fqn, t)) {
                fprintf(stderr, "dcp_mpi: out of memory\n");
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            walk(&s[i], nd, gshape[i], goff[i], len,
                 (float *)sdict_tensor_data(sdict_value_tensor(t)), 1);
            if (nd == 2)
                sh[nsh++] = (sdict_dcp_shard){s[i].fqn, gshape[i], goff[i]};
        }
        if (rank == fail_rank)
            sh[nsh++] = (sdict_dcp_shard){"model.no_such_weight", gshape[0], goff[0]};
        set_path(doc, root, "optim.param_groups", param_groups(doc));
        set_path(doc, root, "epoch", sdict_int_new(doc, 3));
        set_path(doc, root, "tag", sdict_str_new(doc, "mpi", 3));
        st = sdict_mpi_save_dcp(MPI_COMM_WORLD, dir, root, sh, nsh, flags, &err);
        if (st == SDICT_OK)
            printf("rank %d/%d: saved %s\n", rank, world, dir);
    } else {
        static int64_t off[16][2], len[16][2], shape[16][2];
        static const char *const values[] = {
            "optim.param_groups.0.lr",     "optim.param_groups.0.betas",
            "optim.param_groups.0.eps",    "optim.param_groups.0.weight_decay",
            "optim.param_groups.0.amsgrad", "optim.param_groups.0.params",
            "epoch",                       "tag"};
        size_t nv = sizeof values / sizeof *values, n = 0, nonempty = 0;
        sdict_mpi_slice sl[32];
        sdict_value *out[32];
        for (int i = 0; i < ns; i++) {
            int nd = region(&s[i], dim, rank, world, off[i], len[i], shape[i]);
            int64_t cnt = 1;
            for (int d = 0; d < nd; d++)
                cnt *= len[i][d];
            nonempty += cnt > 0;
            sl[n++] = (sdict_mpi_slice){s[i].fqn, off[i], len[i]};
        }
        for (size_t v = 0; v < nv; v++)
            sl[n++] = (sdict_mpi_slice){values[v], NULL, NULL};
        uint64_t items = 0;
        st = sdict_mpi_load_dcp(MPI_COMM_WORLD, dir, NULL, sl, n, doc, out, &items, &err);
        for (int i = 0; st == SDICT_OK && i < ns; i++) {
            const sdict_tensor *t = sdict_value_tensor(out[i]);
            int nd = s[i].param < 0 ? 0 : NDIM[s[i].param];
            int ok = t && t->dtype == SDICT_FLOAT32 && t->ndim == nd;
            for (int d = 0; ok && d < nd; d++)
                ok = t->shape[d] == len[i][d];
            long b = ok ? walk(&s[i], nd, shape[i], off[i], len[i],
                               (float *)sdict_tensor_data(t), 0)
                        : 1;
            if (b)
                fprintf(stderr, "dcp_mpi: rank %d: %s: %ld wrong elements or wrong shape\n", rank,
                        s[i].fqn, b);
            bad += b;
        }
        if (st == SDICT_OK) {
            size_t tl = 0;
            const char *tag = sdict_str_get(out[ns + 7], &tl);
            int ok = sdict_float_get(out[ns]) == 0.001 &&
                     sdict_value_kind(out[ns + 1]) == SDICT_KIND_TUPLE &&
                     sdict_seq_len(out[ns + 1]) == 2 &&
                     sdict_float_get(out[ns + 2]) == 1e-8 &&
                     sdict_value_kind(out[ns + 4]) == SDICT_KIND_BOOL &&
                     sdict_seq_len(out[ns + 5]) == N_PARAMS && tag && tl == 3 &&
                     !memcmp(tag, "mpi", 3);
            if (!ok) {
                fprintf(stderr, "dcp_mpi: rank %d: non-tensor values differ\n", rank);
                bad++;
            }
            if (own && items != nonempty + nv) {
                fprintf(stderr, "dcp_mpi: rank %d: read %llu items, expected %zu\n", rank,
                        (unsigned long long)items, nonempty + nv);
                bad++;
            }
            printf("rank %d/%d: %zu slices (%zu tensors non-empty) %s, %llu items read\n", rank,
                   world, n, nonempty, bad ? "WRONG" : "ok", (unsigned long long)items);
        }
    }
    if (st) {
        sdict_error_format(&err, line, sizeof line);
        fprintf(stderr, "dcp_mpi: rank %d: %s\n", rank, line);
    }
    sdict_doc_free(doc);
    MPI_Finalize();
    return st || bad ? 1 : 0;
}
