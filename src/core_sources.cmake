# Torch-including sources of retort_core. Keep this list short: each entry costs a
# Torch compile. Modules append their files here.
set(RETORT_CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/common/runtime.cpp
)
# model/ and rollout/ (config.cpp and safetensors.cpp are Torch-free but share the target)
list(APPEND RETORT_CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/model/config.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/safetensors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/transformer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/lm_head.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/attention.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model/checkpoint.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/sampler.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/score.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/block_manager.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/scheduler.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/model_runner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/engine.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rollout/tools.cpp
)
# dist/: data parallel over c10d (one Torch translation unit)
list(APPEND RETORT_CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/dist/dist.cpp
)
