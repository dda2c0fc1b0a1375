# Rewards benchmark: math verifications per second per core on MATH-500 pairs, next to a
# sympy-based Python grader run on the same pairs in the same run.
add_executable(bench_rewards ${CMAKE_CURRENT_LIST_DIR}/bench_rewards.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_rewards PRIVATE retort_rewards)
target_compile_definitions(bench_rewards PRIVATE RETORT_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
set_target_properties(bench_rewards PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
