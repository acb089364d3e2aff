# bpf_object(NAME SOURCE): compiles bpf/SOURCE with clang for the BPF target,
# generates a libbpf skeleton with bpftool and exposes it as the INTERFACE
# library NAME_skel (include "NAME.skel.h").
#
# vmlinux.h comes from the running kernel's BTF. Where that is missing, the
# committed bpf/vmlinux/<arch>/vmlinux.h is used; failing both, configure stops.

find_program(BPF_CLANG NAMES clang clang-14 clang-15 clang-16)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin)
if(NOT BPF_CLANG)
  message(FATAL_ERROR "clang not found: it compiles the BPF programs (apt-get install clang, or run deploy/install-deps.sh)")
endif()
if(NOT BPFTOOL)
  message(FATAL_ERROR "bpftool not found: it generates BPF skeletons (apt-get install bpftool, or run deploy/install-deps.sh)")
endif()

execute_process(COMMAND ${BPF_CLANG} -dumpversion OUTPUT_VARIABLE BPF_CLANG_VERSION OUTPUT_STRIP_TRAILING_WHITESPACE)
if(BPF_CLANG_VERSION VERSION_LESS 11)
  message(FATAL_ERROR "clang ${BPF_CLANG_VERSION} is too old for BPF CO-RE; need 11 or newer")
endif()
execute_process(COMMAND ${BPFTOOL} version OUTPUT_VARIABLE BPFTOOL_VERSION_OUT RESULT_VARIABLE BPFTOOL_RC)
if(NOT BPFTOOL_RC EQUAL 0 OR NOT BPFTOOL_VERSION_OUT MATCHES "v([0-9]+)\\.")
  message(FATAL_ERROR "${BPFTOOL} does not run (${BPFTOOL_RC}); is this root or is the bpftool package broken?")
endif()
if(CMAKE_MATCH_1 LESS 5)
  message(FATAL_ERROR "bpftool ${CMAKE_MATCH_1} is too old; need 5 or newer for 'gen skeleton'")
endif()

string(TOLOWER ${CMAKE_SYSTEM_PROCESSOR} _bpf_arch)
if(_bpf_arch MATCHES "x86_64|amd64")
  set(BPF_TARGET_ARCH x86)
  set(_vmlinux_arch x86)
elseif(_bpf_arch MATCHES "aarch64|arm64")
  set(BPF_TARGET_ARCH arm64)
  set(_vmlinux_arch arm64)
else()
  message(FATAL_ERROR "unsupported architecture for BPF: ${CMAKE_SYSTEM_PROCESSOR}")
endif()

set(BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf_gen)
file(MAKE_DIRECTORY ${BPF_GEN_DIR})
set(_vmlinux_fallback ${CMAKE_SOURCE_DIR}/bpf/vmlinux/${_vmlinux_arch}/vmlinux.h)
if(EXISTS /sys/kernel/btf/vmlinux)
  execute_process(
    COMMAND ${BPFTOOL} btf dump file /sys/kernel/btf/vmlinux format c
    OUTPUT_FILE ${BPF_GEN_DIR}/vmlinux.h
    RESULT_VARIABLE _btf_rc)
  if(NOT _btf_rc EQUAL 0)
    message(FATAL_ERROR "bpftool could not dump /sys/kernel/btf/vmlinux (exit ${_btf_rc})")
  endif()
  message(STATUS "BPF: vmlinux.h from the running kernel's BTF")
elseif(EXISTS ${_vmlinux_fallback})
  configure_file(${_vmlinux_fallback} ${BPF_GEN_DIR}/vmlinux.h COPYONLY)
  message(STATUS "BPF: no /sys/kernel/btf/vmlinux; using committed ${_vmlinux_fallback}")
else()
  message(FATAL_ERROR "BPF: /sys/kernel/btf/vmlinux is missing (kernel without CONFIG_DEBUG_INFO_BTF) "
                      "and there is no committed fallback at ${_vmlinux_fallback}")
endif()

function(bpf_object name source)
  set(_src ${CMAKE_CURRENT_SOURCE_DIR}/${source})
  set(_obj ${BPF_GEN_DIR}/${name}.bpf.o)
  set(_skel ${BPF_GEN_DIR}/${name}.skel.h)
  # Every header beside the sources may be included by a BPF program.
  file(GLOB _bpf_headers ${CMAKE_CURRENT_SOURCE_DIR}/*.h)
  add_custom_command(
    OUTPUT ${_obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${BPF_TARGET_ARCH}
            -Wall -Werror -I${BPF_GEN_DIR} -I${CMAKE_CURRENT_SOURCE_DIR}
            -c ${_src} -o ${_obj}.full
    # Keep BTF (CO-RE needs it) but drop DWARF from the embedded object.
    COMMAND llvm-strip -g ${_obj}.full -o ${_obj}
    DEPENDS ${_src} ${_bpf_headers} ${BPF_GEN_DIR}/vmlinux.h
    COMMENT "BPF ${source}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${_skel}
    COMMAND ${BPFTOOL} gen skeleton ${_obj} name ${name} > ${_skel}
    DEPENDS ${_obj}
    COMMENT "BPF skeleton ${name}.skel.h")
  # One target owns the custom commands; others depend on it, never on the files.
  add_custom_target(${name}_skel_gen DEPENDS ${_skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${BPF_GEN_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
