/*
 statedict_mpi.h - torch.distributed.checkpoint (DCP) folders saved and loaded from many MPI
 processes at once (libstatedict_mpi, built when CMake finds MPI; libstatedict itself has no MPI
 dependency).

 Save (torch's dcp.save over a process group): every rank passes its state dict and the shards
 it owns; the local plans are gathered on rank 0 of the communicator, deduplicated (a tensor or
 value replicated on several ranks is written by one of them, chosen before anything is
 written) and the global plan broadcast; every rank writes its own file in parallel, staged
 as `__<rank>_0.distcp.partial` (temporary file, fsync, rename); only after every rank
 reported its file durable does rank 0 commit: remove an old `.metadata`, rename the staged
 files to `__<rank>_0.distcp` and write `.metadata`. An error on any rank before the commit
 makes every rank return that error and remove its staged file, leaving a checkpoint already
 in dir as it was. torch 2.6 and 2.14 `dcp.load` the result on any number of ranks.

 Load (torch's dcp.load with its own sharding): every rank asks for the slices it needs (any
 sharding, any rank count, independent of the save's) and reads only the items of the saved
 chunks overlapping them.

 Both are collective: every rank of comm must call them, with the same dir.
*/
#ifndef STATEDICT_MPI_H
#define STATEDICT_MPI_H

#include <mpi.h>

#include "statedict.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 Saves a distributed checkpoint from every rank of comm (collective).

 @param comm      the ranks saving; rank r writes `__<r>_0.distcp`, rank 0 also `.metadata`.
 @param dir       the folder (the same on every rank; created if missing; a shared file system
                  when the ranks run on several hosts).
 @param root      this rank's state dict (a dict; flattened as sdict_save_dcp flattens it).
 @param shards    the tensors of root that are shards of global tensors (sdict_dcp_shard:
                  fqn, global shape, offsets); tensors not named are replicated (saved whole,
                  written by one rank). NULL when n_shards is 0.
 @param flags     0, or SDICT_DCP_DEDUP_LOWEST_RANK.
 @param err       optional; on failure the first failing rank's error, its message prefixed
                  with "rank R: ".
 @return the same status on every rank: SDICT_OK, or what sdict_dcp_plan_local,
         sdict_dcp_plan_global, sdict_dcp_begin, sdict_dcp_write_rank or sdict_dcp_commit
         returned on the first failing rank (lowest rank number), or SDICT_E_IO for an MPI
         failure or a plan over 2 GiB.
*/
SDICT_API sdict_status sdict_mpi_save_dcp(MPI_Comm comm, const char *dir, const sdict_value *root,
                                const sdict_dcp_shard *shards, size_t n_shards, uint32_t flags,
                                sdict_error *err);

/** A part of a checkpoint entry a rank wants: a region of a tensor, or a whole non-tensor
    value. */
typedef struct sdict_mpi_slice {
    const char *fqn;        /**< the flattened key */
    const int64_t *offsets; /**< ndim element offsets, NULL for zeros (ignored for values) */
    const int64_t *lengths; /**< ndim lengths, NULL for the global shape (ignored for values) */
} sdict_mpi_slice;

/**
 Loads this rank's slices of a distributed checkpoint (collective): each rank opens the folder's
 `.metadata` (sdict_dcp_open) and reads its slices with sdict_dcp_read_region /
 sdict_dcp_read_value, touching only the items of chunks that overlap them.

 @param opts        NULL or load options (as sdict_dcp_open).
 @param slices      n slices; out[i] receives slice i: a new contiguous tensor of shape
                    lengths (its own storage), or the non-tensor value, allocated in doc.
 @param items_read  optional out: how many saved items this rank read.
 @param err         optional; on failure the first failing rank's error ("rank R: ...").
 @return the same status on every rank: SDICT_OK, or the first failing rank's status from
         sdict_dcp_open / sdict_dcp_read_region / sdict_dcp_read_value (SDICT_E_NOT_FOUND for an
         fqn not in the checkpoint). On failure every out[i] is NULL (values made in doc stay
         until the doc is freed).
*/
SDICT_API sdict_status sdict_mpi_load_dcp(MPI_Comm comm, const char *dir, const sdict_load_opts *opts,
                                const sdict_mpi_slice *slices, size_t n, sdict_doc *doc,
                                sdict_value **out, uint64_t *items_read, sdict_error *err);

#ifdef __cplusplus
}
#endif

#endif /* STATEDICT_MPI_H */
