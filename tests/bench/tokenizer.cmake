add_executable(bench_tokenizer ${CMAKE_CURRENT_LIST_DIR}/bench_tokenizer.cpp ${CMAKE_SOURCE_DIR}/src/common/openblas_env.cpp)
target_link_libraries(bench_tokenizer PRIVATE retort_text)
target_compile_definitions(bench_tokenizer PRIVATE RETORT_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
set_target_properties(bench_tokenizer PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
