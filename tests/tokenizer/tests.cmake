set(RETORT_TESTS_tokenizer
  ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_trainer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_chat_template.cpp
)
set(RETORT_TESTS_tokenizer_LIBS retort_text)
