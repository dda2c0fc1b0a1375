# Tests of rewards/: [unit] for extraction, math (with the MATH-500/GSM8K/AIME/AMC data), shape,
# composition, plugins and the verify loop; [sandbox] for the code verifier (HumanEval, MBPP).
set(RETORT_TESTS_rewards
  ${CMAKE_CURRENT_LIST_DIR}/test_extract.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_math.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_math_data.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_math_verify_cases.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_shape.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_combine.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_plugins.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_code.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_synthetic_grading.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_tool_calls.cpp
)
set(RETORT_TESTS_rewards_LIBS retort_rewards)
# The example plugin (built with retort_rewards, see rewards/CMakeLists.txt) and the
# example external verifier reach the tests by path.
set_property(SOURCE ${CMAKE_CURRENT_LIST_DIR}/test_plugins.cpp APPEND PROPERTY COMPILE_DEFINITIONS
  RETORT_EXAMPLE_PLUGIN="${CMAKE_BINARY_DIR}/rewards/examples/example_plugin.so"
  RETORT_EXAMPLE_EXTERNAL="${CMAKE_SOURCE_DIR}/rewards/examples/external_verifier.py")
