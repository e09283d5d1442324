{
  "targets": [
    {
      "target_name": "precopy",
      "sources": [
        "native/binding.cc",
        "native/probe.cc",
        "native/ptrace_threads.cc",
        "native/inject.cc",
        "native/arm_helper.cc",
        "native/freeze.cc",
        "native/uffd.cc",
        "native/pagemap_scan.cc",
        "native/pagemap_walk.cc",
        "native/page_reader.cc",
        "native/page_hash.cc",
        "native/page_stager.cc",
        "native/malloc_tuning.cc",
        "native/direct_write.cc",
        "node_modules/lz4/deps/lz4/lib/lz4.c",
        "native/proc_files.cc",
        "native/fd_inspect.cc",
        "native/xsave_layout.cc",
        "native/tracker.cc",
        "native/thread_state.cc",
        "native/helper_process.cc",
        "native/capture_helper.cc",
        "native/cow_snapshot.cc",
        "native/restore_stub.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")", "node_modules/lz4/deps/lz4/lib"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"]
    },
    {
      "target_name": "precopy-arm-helper",
      "type": "executable",
      "sources": [
        "native/arm_helper_main.cc",
        "native/arm_helper.cc",
        "native/helper_process.cc",
        "native/inject.cc",
        "native/ptrace_threads.cc",
        "native/proc_files.cc"
      ],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"]
    },
    {
      "target_name": "precopy-capture-helper",
      "type": "executable",
      "sources": [
        "native/capture_helper_main.cc",
        "native/capture_helper.cc",
        "native/cow_snapshot.cc",
        "native/pagemap_scan.cc",
        "native/thread_state.cc",
        "native/helper_process.cc",
        "native/inject.cc",
        "native/ptrace_threads.cc",
        "native/proc_files.cc"
      ],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"],
      "ldflags": ["-static"]
    },
    {
      "target_name": "precopy-restore-stub",
      "type": "executable",
      "sources": ["native/restore_stub_main.c"],
      "cflags": ["-O2", "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-pie"],
      "ldflags": ["-static", "-nostdlib", "-no-pie"]
    }
  ]
}
