# Model benchmark: retort vs an eager Python loop of the same model (bench_model.py).
add_executable(bench_model ${CMAKE_CURRENT_LIST_DIR}/bench_model.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_model PRIVATE retort_core)
target_compile_definitions(bench_model PRIVATE RETORT_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_precompile_headers(bench_model REUSE_FROM retort_core)
set_target_properties(bench_model PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
# Rollout benchmark: the engine vs the previous static sampler on the same forced-length work.
add_executable(bench_rollout ${CMAKE_CURRENT_LIST_DIR}/bench_rollout.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_rollout PRIVATE retort_core)
target_precompile_headers(bench_rollout REUSE_FROM retort_core)
set_target_properties(bench_rollout PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
# Tool calls: pausing a sequence for its call against running each call in line.
add_executable(bench_tools ${CMAKE_CURRENT_LIST_DIR}/bench_tools.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_tools PRIVATE retort_core)
target_compile_definitions(bench_tools PRIVATE RETORT_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_precompile_headers(bench_tools REUSE_FROM retort_core)
set_target_properties(bench_tools PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
# Training memory at real shapes: chunked LM head, checkpointing, packing (one child process per row).
add_executable(bench_train_memory ${CMAKE_CURRENT_LIST_DIR}/bench_train_memory.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_train_memory PRIVATE retort_core)
target_compile_definitions(bench_train_memory PRIVATE RETORT_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_precompile_headers(bench_train_memory REUSE_FROM retort_core)
set_target_properties(bench_train_memory PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
