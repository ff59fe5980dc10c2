# `cmake --install <build> [--prefix P]` lays out ringpoll as a library:
#
#   P/include/ringpoll/ringpoll.h, version.h      the umbrella header and the version
#   P/include/ringpoll/{poller,engine,epoll,uring}/*.h   the public headers (they include
#                                                  each other by relative paths, so only
#                                                  P/include is needed on the path)
#   P/lib*/libringpoll.a, libringpoll.so.*        static and shared library
#   P/bin/ringpoll-{echo,load,serve,proxy}        the programs
#   P/lib*/cmake/ringpoll/                        find_package(ringpoll [COMPONENTS ...]),
#                                                  components tuning, tls, packet, ...
#   P/lib*/pkgconfig/ringpoll.pc                  pkg-config (static, as ringpoll::ringpoll)
#   P/lib*/pkgconfig/ringpoll-shared.pc           pkg-config (shared, with an rpath)
#   P/share/doc/ringpoll/                         README, CHANGELOG, docs/, examples/
#
# Targets: ringpoll::ringpoll (static), ringpoll::ringpoll_shared. Optional parts are
# components, each in its own export file; find_package finds a component only when that
# file was installed, i.e. only when the part was built. See ringpoll_install_component.
include(CMakePackageConfigHelpers)
set(RINGPOLL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/ringpoll)
set(RINGPOLL_INCLUDE_DIR ${CMAKE_INSTALL_INCLUDEDIR}/ringpoll)

# The core library.
set_target_properties(ringpoll PROPERTIES EXPORT_NAME ringpoll)
install(TARGETS ringpoll ringpoll_shared EXPORT ringpoll-targets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT ringpoll-targets NAMESPACE ringpoll:: DESTINATION ${RINGPOLL_CMAKE_DIR})
# poller/internal/ (the test seams, DESIGN.md "Who may include whom") is not installed.
foreach(dir poller engine epoll uring)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${RINGPOLL_INCLUDE_DIR}/${dir}
    FILES_MATCHING PATTERN "*.h" PATTERN "internal" EXCLUDE)
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/ringpoll.h ${RINGPOLL_GENERATED_INCLUDE}/version.h
  DESTINATION ${RINGPOLL_INCLUDE_DIR})

# The programs (linked statically against ringpoll: they need no runtime path).
install(TARGETS ringpoll-echo ringpoll-load ringpoll-serve ringpoll-proxy
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# ringpoll_install_component(NAME n TARGETS t... [HEADER_DIRS d...] [HEADERS f...]
#                            [COMPONENTS c...] [DEPENDENCIES code...])
#   Installs an optional part as component `n`: its targets (exported as ringpoll::<the
#   target's EXPORT_NAME>) into ringpoll-n-targets.cmake, the headers of each source folder
#   d (or the single headers f, paths from the source root) under include/ringpoll/, and
#   into ringpoll-n-dependencies.cmake, which the package runs before it loads the
#   targets: the components c it builds on, then DEPENDENCIES (CMake lines such as
#   "find_dependency(PkgConfig)"). Call it only when the part is built (e.g. when
#   TARGET ringpoll-dpdk exists): the package then reports the component found; otherwise
#   find_package(ringpoll COMPONENTS n) says it was not built.
function(ringpoll_install_component)
  cmake_parse_arguments(C "" "NAME" "TARGETS;HEADER_DIRS;HEADERS;COMPONENTS;DEPENDENCIES" ${ARGN})
  if(NOT C_NAME OR NOT C_TARGETS)
    message(FATAL_ERROR "ringpoll_install_component needs NAME and TARGETS")
  endif()
  install(TARGETS ${C_TARGETS} EXPORT ringpoll-${C_NAME}-targets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT ringpoll-${C_NAME}-targets NAMESPACE ringpoll:: DESTINATION ${RINGPOLL_CMAKE_DIR})
  foreach(dir ${C_HEADER_DIRS})
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${RINGPOLL_INCLUDE_DIR}/${dir}
      FILES_MATCHING PATTERN "*.h")
  endforeach()
  foreach(f ${C_HEADERS})
    get_filename_component(sub ${f} DIRECTORY)
    install(FILES ${PROJECT_SOURCE_DIR}/${f} DESTINATION ${RINGPOLL_INCLUDE_DIR}/${sub})
  endforeach()
  set(deps "include(CMakeFindDependencyMacro)")
  foreach(c ${C_COMPONENTS})
    list(APPEND deps "include(\${CMAKE_CURRENT_LIST_DIR}/ringpoll-${c}-dependencies.cmake)"
      "include(\${CMAKE_CURRENT_LIST_DIR}/ringpoll-${c}-targets.cmake)")
  endforeach()
  list(APPEND deps ${C_DEPENDENCIES})
  string(JOIN "\n" deps ${deps})
  set(deps_file ${PROJECT_BINARY_DIR}/ringpoll-${C_NAME}-dependencies.cmake)
  file(WRITE ${deps_file} "${deps}\n")
  install(FILES ${deps_file} DESTINATION ${RINGPOLL_CMAKE_DIR})
endfunction()

# Component `tls`: TLS streams on OpenSSL 3 and the kTLS probe (tls/), ringpoll::tls. The
# core ringpoll::ringpoll does not need OpenSSL; this component brings it.
set_target_properties(ringpoll-tls PROPERTIES EXPORT_NAME tls)
target_include_directories(ringpoll-tls PUBLIC $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
ringpoll_install_component(NAME tls TARGETS ringpoll-tls HEADER_DIRS tls
  DEPENDENCIES "find_dependency(OpenSSL 3.0)")

# Component `tuning`: TOML config profiles and the --profile/--set command-line glue
# (tuning/config.h, tuning/cli.h), as ringpoll::tuning. Always built. Its [tls] keys are
# checked with the tls component, which it therefore brings along.
set_target_properties(ringpoll-tuning PROPERTIES EXPORT_NAME tuning)
target_include_directories(ringpoll-tuning PUBLIC $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
ringpoll_install_component(NAME tuning TARGETS ringpoll-tuning HEADER_DIRS tuning COMPONENTS tls)

# Component `packet`: the datagram contract and the kernel path (packet/), ringpoll::packet.
# Component `dpdk`: the DPDK path, ringpoll::dpdk, only in builds with RINGPOLL_WITH_DPDK.
# (Their headers are installed with their component: packet/ holds all four paths.)
if(TARGET ringpoll-packet)
  set_target_properties(ringpoll-packet PROPERTIES EXPORT_NAME packet)
  ringpoll_install_component(NAME packet TARGETS ringpoll-packet HEADERS packet/packet_io.h
    packet/frame.h packet/kernel_queue.h packet/packet_source.h)
endif()
if(TARGET ringpoll-dpdk)
  set_target_properties(ringpoll-dpdk PROPERTIES EXPORT_NAME dpdk)
  # DPDK's libraries are linked by whoever links the static ringpoll-dpdk.
  ringpoll_install_component(NAME dpdk TARGETS ringpoll-dpdk HEADERS packet/dpdk_queue.h
    COMPONENTS packet DEPENDENCIES "find_dependency(PkgConfig)"
    "if(NOT TARGET PkgConfig::DPDK)\n  pkg_check_modules(DPDK REQUIRED IMPORTED_TARGET libdpdk)\nendif()")
endif()
# Component `af_xdp`: the AF_XDP path, ringpoll::af_xdp, only with RINGPOLL_WITH_XDP.
if(TARGET ringpoll-xdp)
  set_target_properties(ringpoll-xdp PROPERTIES EXPORT_NAME af_xdp)
  ringpoll_install_component(NAME af_xdp TARGETS ringpoll-xdp HEADERS packet/xdp_queue.h
    COMPONENTS packet DEPENDENCIES "find_dependency(PkgConfig)"
    "if(NOT TARGET PkgConfig::XDP)\n  pkg_check_modules(XDP REQUIRED IMPORTED_TARGET libxdp libbpf)\nendif()")
endif()

# The CMake package.
set(RINGPOLL_PACKAGE_USES_MIMALLOC OFF)
if(RINGPOLL_MIMALLOC AND RINGPOLL_SANITIZE STREQUAL "")
  set(RINGPOLL_PACKAGE_USES_MIMALLOC ON)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ringpoll-config.cmake.in
  ${PROJECT_BINARY_DIR}/ringpoll-config.cmake INSTALL_DESTINATION ${RINGPOLL_CMAKE_DIR})
# 0.x: a new minor version may change the API, so only the same minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ringpoll-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ringpoll-config.cmake
  ${PROJECT_BINARY_DIR}/ringpoll-config-version.cmake DESTINATION ${RINGPOLL_CMAKE_DIR})

# pkg-config. The prefix is found from the .pc file's own place (${pcfiledir}), so the
# file stays right when `cmake --install --prefix` installs somewhere else than
# CMAKE_INSTALL_PREFIX.
# ringpoll.pc links the static library like ringpoll::ringpoll (so its dependencies are in
# Libs); ringpoll-shared.pc the shared one with an rpath, like ringpoll::ringpoll_shared.
string(REGEX REPLACE "[^/]+" ".." RINGPOLL_PC_UP "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
set(RINGPOLL_PC_LIBS "-lnuma -pthread")
if(RINGPOLL_PACKAGE_USES_MIMALLOC)
  string(APPEND RINGPOLL_PC_LIBS " -lmimalloc")
endif()
foreach(pc ringpoll ringpoll-shared)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

# What a user reads without the source checkout, in P/share/doc/ringpoll/: the README,
# the CHANGELOG, docs/ and examples/ (a project of its own: cmake -S that directory
# -DCMAKE_PREFIX_PATH=P builds and tests every example against this install).
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/CHANGELOG.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs
  FILES_MATCHING PATTERN "*.md")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
  FILES_MATCHING PATTERN "*.cc" PATTERN "*.h" PATTERN "CMakeLists.txt")
