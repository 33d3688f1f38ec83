"""glmkit.runtimes — one runtime interface over OpenVINO GenAI, llama.cpp and the PyTorch reference."""
