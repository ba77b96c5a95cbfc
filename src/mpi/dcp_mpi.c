/*
 dcp_mpi.c - DCP saves and loads over MPI (statedict_mpi.h), built only on libstatedict's public
 plan / write / commit and lazy-reader API. The steps and messages of a save, as torch's
 _save_state_dict runs them over a process group:

   every rank    sdict_dcp_plan_local                      -> gather (length, bytes) on rank 0
   rank 0        sdict_dcp_plan_global, sdict_dcp_begin     -> broadcast (status, global plan)
   every rank    sdict_dcp_write_rank (file durable)        -> gather (status, written plan)
   rank 0        sdict_dcp_commit once all succeeded        -> broadcast status

 After each step the ranks agree on a status: the lowest failing rank broadcasts its error and
 every rank returns it, so no rank is left waiting and no .metadata follows a failure.
*/
#include "statedict_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdict_status mpi_fail(sdict_error *err, int rc, const char *what) {
    if (err) {
        char msg[MPI_MAX_ERROR_STRING];
        int n = 0;
        if (MPI_Error_string(rc, msg, &n) != MPI_SUCCESS)
            snprintf(msg, sizeof msg, "MPI error %d", rc);
        memset(err, 0, sizeof *err);
        err->code = SDICT_E_IO;
        err->offset = -1;
        snprintf(err->message, sizeof err->message, "%s: %s", what, msg);
    }
    return SDICT_E_IO;
}

/* Every rank learns whether some rank failed; the lowest failing rank's error becomes every
   rank's (its message prefixed with the rank). */
static sdict_status agree(MPI_Comm comm, int rank, sdict_status st, sdict_error *err) {
    int mine = st ? rank : INT_MAX, first = INT_MAX;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS)
        return mpi_fail(err, MPI_ERR_OTHER, "MPI_Allreduce");
    if (first == INT_MAX)
        return SDICT_OK;
    sdict_error e;
    memset(&e, 0, sizeof e);
    if (rank == first) {
        if (err)
            e = *err;
        e.code = st;
    }
    int rc = MPI_Bcast(&e, (int)sizeof e, MPI_BYTE, first, comm);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, rc, "MPI_Bcast");
    if (err) {
        *err = e;
        char msg[sizeof e.message];
        snprintf(msg, sizeof msg, "rank %d: %.300s", first, e.message);
        memcpy(err->message, msg, sizeof msg);
    }
    return e.code ? e.code : SDICT_E_IO;
}

/* Gathers every rank's buffer on rank 0: *all (one allocation), offs/lens per rank. */
static sdict_status gather(MPI_Comm comm, int rank, int world, const void *buf, size_t len,
                           char **all, int **lens, int **offs, sdict_error *err) {
    *all = NULL;
    *lens = *offs = NULL;
    if (len > INT_MAX)
        len = 0; /* refused below on every rank through the lengths */
    int n = (int)len, rc;
    int st = SDICT_OK;
    if (rank == 0) {
        *lens = calloc((size_t)world, sizeof **lens);
        *offs = calloc((size_t)world, sizeof **offs);
        if (!*lens || !*offs)
            st = SDICT_E_NOMEM;
    }
    /* before each collective every rank learns whether rank 0 can take part (a rank returning
       early would leave the others waiting in it); rank 0's status is agreed on next */
    if ((rc = MPI_Bcast(&st, 1, MPI_INT, 0, comm)) != MPI_SUCCESS)
        return mpi_fail(err, rc, "MPI_Bcast");
    if (st)
        return rank == 0 ? (sdict_status)st : SDICT_OK;
    rc = MPI_Gather(&n, 1, MPI_INT, rank == 0 ? *lens : NULL, 1, MPI_INT, 0, comm);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, rc, "MPI_Gather");
    long long total = 0;
    if (rank == 0) {
        for (int r = 0; r < world; r++) {
            (*offs)[r] = (int)total;
            total += (*lens)[r];
        }
        if (total > INT_MAX)
            st = SDICT_E_LIMIT;
        else if (!(*all = malloc((size_t)total + 1)))
            st = SDICT_E_NOMEM;
    }
    if ((rc = MPI_Bcast(&st, 1, MPI_INT, 0, comm)) != MPI_SUCCESS)
        return mpi_fail(err, rc, "MPI_Bcast");
    if (st)
        return rank == 0 ? (sdict_status)st : SDICT_OK; /* rank 0's status is agreed on next */
    rc = MPI_Gatherv(buf, n, MPI_BYTE, *all, *lens, *offs, MPI_BYTE, 0, comm);
    return rc == MPI_SUCCESS ? SDICT_OK : mpi_fail(err, rc, "MPI_Gatherv");
}

static sdict_status gather_err(sdict_status st, sdict_error *err) {
    if (st == SDICT_E_NOMEM && err) {
        memset(err, 0, sizeof *err);
        err->code = st;
        err->offset = -1;
        snprintf(err->message, sizeof err->message, "out of memory gathering plans");
    } else if (st == SDICT_E_LIMIT && err) {
        memset(err, 0, sizeof *err);
        err->code = st;
        err->offset = -1;
        snprintf(err->message, sizeof err->message, "the ranks' plans exceed 2 GiB together");
    }
    return st;
}

sdict_status sdict_mpi_save_dcp(MPI_Comm comm, const char *dir, const sdict_value *root,
                                const sdict_dcp_shard *shards, size_t n_shards, uint32_t flags,
                                sdict_error *err) {
    int rank = 0, world = 1;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &world) != MPI_SUCCESS)
        return mpi_fail(err, MPI_ERR_COMM, "MPI_Comm_rank");
    void *local = NULL, *global = NULL, *written = NULL;
    size_t local_len = 0, global_len = 0, written_len = 0;
    char *all = NULL;
    int *lens = NULL, *offs = NULL;
    const void **parts = NULL;
    size_t *plens = NULL;
    int glen = 0, rc = MPI_SUCCESS;

    /* 1. local plans, gathered on rank 0 */
    sdict_status st = sdict_dcp_plan_local(root, shards, n_shards, &local, &local_len, err);
    if (st == SDICT_OK && local_len > INT_MAX)
        st = gather_err(SDICT_E_LIMIT, err);
    if ((st = agree(comm, rank, st, err)))
        goto out;
    st = gather_err(gather(comm, rank, world, local, local_len, &all, &lens, &offs, err), err);
    if ((st = agree(comm, rank, st, err)))
        goto out;

    /* 2. rank 0: global plan (deduplication), the folder created */
    if (rank == 0) {
        parts = calloc((size_t)world, sizeof *parts);
        plens = calloc((size_t)world, sizeof *plens);
        if (!parts || !plens) {
            st = gather_err(SDICT_E_NOMEM, err);
        } else {
            for (int r = 0; r < world; r++) {
                parts[r] = all + offs[r];
                plens[r] = (size_t)lens[r];
            }
            st = sdict_dcp_plan_global(parts, plens, (size_t)world, flags, &global, &global_len,
                                       err);
            if (st == SDICT_OK && global_len > INT_MAX)
                st = gather_err(SDICT_E_LIMIT, err);
            if (st == SDICT_OK)
                st = sdict_dcp_begin(dir, err);
        }
    }
    if ((st = agree(comm, rank, st, err)))
        goto out;
    glen = (int)global_len;
    rc = MPI_Bcast(&glen, 1, MPI_INT, 0, comm);
    if (rc == MPI_SUCCESS && rank != 0) {
        global_len = (size_t)glen;
        if (!(global = malloc(global_len ? global_len : 1)))
            st = gather_err(SDICT_E_NOMEM, err);
    }
    if ((st = agree(comm, rank, rc == MPI_SUCCESS ? st : mpi_fail(err, rc, "MPI_Bcast"), err)))
        goto out;
    if ((rc = MPI_Bcast(global, glen, MPI_BYTE, 0, comm)) != MPI_SUCCESS)
        st = mpi_fail(err, rc, "MPI_Bcast");

    /* 3. every rank writes its file; the written plans go to rank 0 */
    if (st == SDICT_OK)
        st = sdict_dcp_write_rank(dir, (size_t)rank, root, shards, n_shards, global, global_len,
                                  &written, &written_len, err);
    if ((st = agree(comm, rank, st, err)))
        goto out;
    free(all);
    free(lens);
    free(offs);
    st = gather_err(gather(comm, rank, world, written, written_len, &all, &lens, &offs, err),
                    err);
    if ((st = agree(comm, rank, st, err)))
        goto out;

    /* 4. rank 0 commits: every rank's data is durable by now */
    if (rank == 0) {
        for (int r = 0; r < world; r++) {
            parts[r] = all + offs[r];
            plens[r] = (size_t)lens[r];
        }
        st = sdict_dcp_commit(dir, parts, plens, (size_t)world, err);
    }
    st = agree(comm, rank, st, err);
out:
    if (st) /* not committed: this rank's staged file goes (the old checkpoint stays) */
        sdict_dcp_discard(dir, (size_t)rank, NULL);
    if (rank == 0)
        sdict_free_buffer(global);
    else
        free(global);
    sdict_free_buffer(local);
    sdict_free_buffer(written);
    free(all);
    free(lens);
    free(offs);
    free(parts);
    free(plens);
    return st;
}

sdict_status sdict_mpi_load_dcp(MPI_Comm comm, const char *dir, const sdict_load_opts *opts,
                                const sdict_mpi_slice *slices, size_t n, sdict_doc *doc,
                                sdict_value **out, uint64_t *items_read, sdict_error *err) {
    int rank = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS)
        return mpi_fail(err, MPI_ERR_COMM, "MPI_Comm_rank");
    if (items_read)
        *items_read = 0;
    for (size_t i = 0; out && i < n; i++)
        out[i] = NULL;
    sdict_dcp *d = NULL;
    sdict_status st = SDICT_OK;
    if (!dir || !doc || !out || (n && !slices)) {
        st = SDICT_E_INVALID_ARG;
        if (err) {
            memset(err, 0, sizeof *err);
            err->code = st;
            err->offset = -1;
            snprintf(err->message, sizeof err->message, "sdict_mpi_load_dcp: NULL argument");
        }
    }
    if (st == SDICT_OK)
        st = sdict_dcp_open(dir, opts, &d, err);
    for (size_t i = 0; st == SDICT_OK && i < n; i++) {
        const sdict_dcp_entry *e = sdict_dcp_find(d, slices[i].fqn ? slices[i].fqn : "");
        if (e && !e->is_tensor)
            st = sdict_dcp_read_value(d, slices[i].fqn, doc, &out[i], err);
        else
            st = sdict_dcp_read_region(d, slices[i].fqn, slices[i].offsets, slices[i].lengths,
                                       doc, &out[i], err);
    }
    if (items_read)
        *items_read = sdict_dcp_items_read(d);
    sdict_dcp_close(d);
    st = agree(comm, rank, st, err);
    for (size_t i = 0; st && out && i < n; i++)
        out[i] = NULL;
    return st;
}
