import Torch
print(Torch.parallelInfo)
