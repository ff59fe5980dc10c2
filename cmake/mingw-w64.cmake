# Cross-compiling for 64-bit Windows with mingw-w64 (Debian's `mingw-w64` packages), for
# the IOCP backend and its tests, which run under Wine (see ringpoll-win.sh).
# The -posix compilers use winpthreads, which gives std::thread and std::mutex.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(RINGPOLL_MINGW_PREFIX x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${RINGPOLL_MINGW_PREFIX}-gcc-posix)
set(CMAKE_CXX_COMPILER ${RINGPOLL_MINGW_PREFIX}-g++-posix)
set(CMAKE_RC_COMPILER ${RINGPOLL_MINGW_PREFIX}-windres)
set(CMAKE_FIND_ROOT_PATH /usr/${RINGPOLL_MINGW_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# One self-contained .exe: no libstdc++/winpthread DLLs to copy next to it for Wine.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static -static-libgcc -static-libstdc++")
