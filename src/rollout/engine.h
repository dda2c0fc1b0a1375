// The rollout engine: continuous batching over a block KV cache, in the manner of nano-vllm
// (nanovllm/engine/): a Sequence owns its tokens and block table (rollout/sequence.h); the
// BlockManager allocates, shares and frees blocks (rollout/block_manager.h); the Scheduler
// chooses prefill or decode and preempts when blocks run out (rollout/scheduler.h); the
// ModelRunner runs a batch (rollout/model_runner.h). The loop that ties them is `sample`
// (declared in rollout/sampler.h, defined in engine.cpp):
//
//   1 size   the pool from the budget (sampling.kv_cache_mb; CPU 2048 MiB by default, CUDA
//            half the free memory), capped by what the work could ever hold; a sequence that
//            cannot fit even alone (prompt + max_new_tokens - 1 positions) is one clear error
//   2 queue  every prompt's G completions, one group each (its KV computed and stored once)
//   3 step   schedule -> run -> sample each sequence's next token with its own generator ->
//            finished sequences free their blocks and go to on_finished at once; with tools
//            (rollout/tools.h, docs/tools.md), a sequence that closed a call pauses keeping its
//            blocks, the call runs in the sandbox pool, and each step first collects finished
//            calls: the observation is appended and the sequence resumes as a prefill unit
//   4 return the Rollout (sampler.h), rows in prompt-major order whatever the schedule
//
// Results do not depend on scheduling: each sequence draws from its own CPU generator,
// seeded by SamplerOptions::row_seeds or (seed, prompt, sample), one draw per token, so its
// tokens are the same (CPU, float32) for any budget, batch, admission order or preemption.
// What it deliberately is not: a server (no requests arriving while it runs), nor a kernel
// library (attention gathers each row's keys with index_select; CUDA graphs are not used).
#pragma once

#include <cstdint>  // defines: int64_t

#include "common/torch_pch.h"  // defines: torch::Device

namespace retort {

// The KV cache budget in bytes when sampling.kv_cache_mb is 0: 2048 MiB on CPU; on CUDA half
// of the device's free memory (queried through the CUDA runtime or driver found in the
// process; 2048 MiB when neither answers).
int64_t default_kv_cache_bytes(const torch::Device& device);

}  // namespace retort
