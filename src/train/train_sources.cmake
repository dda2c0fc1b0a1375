# Torch-including sources of src/train, appended to retort_core.
list(APPEND RETORT_CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/grpo_loss.cpp
  ${CMAKE_CURRENT_LIST_DIR}/distill_losses.cpp
  ${CMAKE_CURRENT_LIST_DIR}/optim.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sft.cpp
  ${CMAKE_CURRENT_LIST_DIR}/distill.cpp
  ${CMAKE_CURRENT_LIST_DIR}/grpo.cpp
  ${CMAKE_CURRENT_LIST_DIR}/eval.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pipeline.cpp
)
