# Sandbox benchmark: jobs/s of a trivial Python program through the pool (fresh sandbox and
# warm workers) next to the same program started bare, measured in one run.
add_executable(bench_sandbox ${CMAKE_CURRENT_LIST_DIR}/bench_sandbox.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_sandbox PRIVATE retort_sandbox)
set_target_properties(bench_sandbox PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
