# Sourced by the bench/gpu/*_device scripts on the device machine (repository root, .gl and
# .devbin carried): installs the carried Vulkan loader, points it at NVIDIA's ICD, sets K
# (the Kestrel binary) and M (the exported models), prints the GPU and exports the torchvision
# models once.
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json PYTHONUNBUFFERED=1
K=.devbin/kestrel M=/tmp/kestrel-models
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench/gpu'); import models; models.export()"
