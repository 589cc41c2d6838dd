// One persistent pool of worker threads per process, shared by every kernel.
#pragma once
#include <cstdint>
#include <functional>

namespace lwm {

// Threads the pool uses by default: LWM_THREADS if set, else the cores this process may use
// divided by LWM_LOCAL_WORLD_SIZE (ring ranks sharing a machine), at least 1.
int default_threads();

// Runs fn(i, tid) for every i in [0, n), items handed out dynamically; tid is in
// [0, num_threads()). The calling thread takes part. Blocks until all items are done.
// A call made from inside a running parallel_for runs serially on the calling thread.
void parallel_for(int64_t n, const std::function<void(int64_t i, int tid)>& fn);

int num_threads();
// Resizes the pool (n >= 1). Not to be called while a parallel_for runs.
void set_num_threads(int n);

}  // namespace lwm
