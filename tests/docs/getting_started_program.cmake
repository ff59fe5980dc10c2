# cmake -DDOC=docs/getting-started.md -DEXAMPLE=examples/echo_server.cc -P ...
# The program getting-started.md shows whole (between `cat > echo_server.cc <<'CC'` and
# `CC`) must be examples/echo_server.cc, which the example tests build and run: a guide
# whose code drifted from the tested file fails here.
cmake_minimum_required(VERSION 3.25)
file(READ ${DOC} doc)
file(READ ${EXAMPLE} example)
string(FIND "${doc}" "cat > echo_server.cc <<'CC'\n" start)
if(start LESS 0)
  message(FATAL_ERROR "${DOC} shows no program (no `cat > echo_server.cc <<'CC'` block)")
endif()
string(LENGTH "cat > echo_server.cc <<'CC'\n" skip)
math(EXPR start "${start} + ${skip}")
string(SUBSTRING "${doc}" ${start} -1 rest)
string(FIND "${rest}" "\nCC\n" end)
math(EXPR end "${end} + 1")
string(SUBSTRING "${rest}" 0 ${end} shown)
if(NOT shown STREQUAL example)
  file(WRITE ${CMAKE_BINARY_DIR}/getting_started_shown.cc "${shown}")
  message(FATAL_ERROR "the program in ${DOC} differs from ${EXAMPLE} (what the doc shows: "
    "${CMAKE_BINARY_DIR}/getting_started_shown.cc)")
endif()
