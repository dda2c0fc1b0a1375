# Sources of the retort executable: main plus one file per module's subcommands.
set(RETORT_CLI_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/main.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_pipeline.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_audit.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_rewards.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_sandbox.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmd_launch.cpp
)
