"""2025 course §2.1-2.2: train the time-conditioned flow-matching UNet u_theta(x_t, t) (minidiff/flow.py).

    x_t = (1 - t) x0 + t x1,  x0 ~ N(0, I), x1 a digit, t ~ U[0, 1];   L = || u_theta(x_t, t) - (x1 - x0) ||^2

The report's UNet with its time embeddings multiplied in (u0 * t1, u1 * t2). The course's hyperparameters: D = 64,
batch 64, 10 epochs, Adam 1e-2 with ExponentialLR gamma = 0.1 ** (1 / epochs) stepped every epoch. Resumable.
Figures in outputs/fm2_2_train_time_conditioned/: loss.png; checkpoint.pt and model_epoch{1,5,10}.pt for sampling.
"""
import common
import part_b


def main(argv=None):
    args = part_b.add_training_args(common.parser(__doc__)).parse_args(argv)
    return part_b.run_training(args, "flow_time", "time-conditioned flow UNet")[1]


if __name__ == "__main__":
    common.run(main)
