# Writes the bytes of IN as a C++ array definition to OUT (cmake -DIN=... -DOUT=... -P embed.cmake).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE "${OUT}" "// Generated from sandbox/init/sandbox_init.c by embed.cmake; do not edit.\n"
  "#include <cstddef>\nnamespace retort::sandbox {\n"
  "extern const unsigned char kSandboxInit[] = {${body}};\n"
  "extern const size_t kSandboxInitSize = ${bytes};\n}\n")
