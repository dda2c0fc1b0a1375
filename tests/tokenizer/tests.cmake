set(RETORT_TESTS_tokenizer "")
set(RETORT_TESTS_tokenizer_LIBS retort_common)
