"""Deploy file: run the GPU verification gate on the target hosts, changing nothing.

    pyinfra -y @local roles/gpu_host/verify.py --data gpu_expected_model="NVIDIA H200"
"""

from r1deploy.roles.gpu_host import gpu_verify

gpu_verify()
