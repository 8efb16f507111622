# ASan + UBSan for the whole build (asan preset). UBSan findings abort so ctest sees them.
if(CKPTKIT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
